"""Ringing Celery workers' doorbell.

The database is the source of truth and the broker only a doorbell: a message says "a job may
be runnable"; the worker that receives it claims the best runnable job (``flow``), whichever
job rang. Each queued Celery-run job rings once (create, retry, recovery); a lost message is
rung again by the sweeper; a bell that finds nothing runnable does nothing.
"""

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from runner_jobs.errors import BrokerUnavailableError, InvalidTransitionError
from runner_jobs.events import EventType
from runner_jobs.models import JobStatus, RunnerJob

from .bell import bell_ring
from .changes import Change, queue_fields
from .locking import job_update_locked
from .transitions import require_status

logger = logging.getLogger(__name__)

# A run_at further ahead is not rung by a delayed message (a worker would hold it in memory
# all that time): the sweeper rings it once it is overdue.
RUN_AT_BELL_MAX_SECONDS = 3600


def job_publish(job: RunnerJob) -> None:
    """Ring the bell for ``job`` (the dispatcher chooses what runs), at its due time when that
    is ahead (a ``run_at``) and no further than ``RUN_AT_BELL_MAX_SECONDS``: a later job is rung
    by the sweeper once it is overdue; ``BrokerUnavailableError`` when the broker refuses."""
    wait = (job.due_at - timezone.now()).total_seconds() if job.due_at else 0
    if wait > RUN_AT_BELL_MAX_SECONDS:
        return
    bell_ring(job_id=str(job.pk), priority=job.priority, countdown=max(0.0, wait))


def job_publish_on_commit(job: RunnerJob) -> None:
    """After a job was committed ``queued``: send its message. A refusal is logged, never
    raised (the request that created the job still succeeds); the sweeper sends the message of
    a queued job that has not started ``RUNNER_REDISPATCH_AFTER_SECONDS`` after it was due."""
    try:
        job_publish(job)
    except BrokerUnavailableError as exc:
        # Mark the job overdue now (its due time moves back by the redispatch period), so the
        # sweeper's next pass sends it instead of waiting that whole period. Not a change of
        # the job's state: no event, no version bump (like a lease renewal).
        RunnerJob.objects.filter(
            pk=job.pk, status=JobStatus.QUEUED, due_at__lte=timezone.now()
        ).update(due_at=F("due_at") - timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS))
        logger.warning("job %s: message not sent, the sweeper will: %s", job.pk, exc.detail)


def job_dispatch(*, job_id: uuid.UUID | str, actor: str = "system") -> RunnerJob:
    """``pending`` -> ``queued`` once the broker accepted the job's message.

    The row stays locked while publishing, so a worker that receives the message at once waits
    for ``queued`` instead of finding the job ``pending``. Raises ``BrokerUnavailableError``
    (the job stays ``pending``) or ``InvalidTransitionError`` (it is no longer ``pending``).
    """

    def plan(job: RunnerJob) -> Change:
        require_status(job.status, frozenset({JobStatus.PENDING}), "dispatch")
        job_publish(job)
        return Change(EventType.JOB_QUEUED, {}, queue_fields())

    return job_update_locked(job_id=job_id, plan=plan, actor=actor)


def job_dispatch_on_commit(*, job_id: uuid.UUID | str) -> None:
    """``job_dispatch`` as an after-commit hook: a refusal is logged, never raised, so the
    request that created the job still succeeds; the sweeper sends a ``pending`` job later."""
    try:
        job_dispatch(job_id=job_id)
    except BrokerUnavailableError as exc:
        logger.warning("job %s stays pending: %s", job_id, exc.detail)
    except InvalidTransitionError:
        logger.info("job %s was no longer pending when its dispatch ran", job_id)


def job_redispatch(*, job_id: uuid.UUID | str, actor: str = "system") -> RunnerJob:
    """Send the message of a ``queued`` job again: it has been due for longer than
    ``RUNNER_REDISPATCH_AFTER_SECONDS`` without starting, so its message was probably lost.

    ``due_at`` moves to now, so the job is sent again at most once per that period. Raises
    ``InvalidTransitionError`` when the job is not (or no longer) overdue, and
    ``BrokerUnavailableError`` when the broker refuses.
    """

    def plan(job: RunnerJob) -> Change:
        require_status(job.status, frozenset({JobStatus.QUEUED}), "redispatch")
        if job.due_at is not None and job.due_at > redispatch_cutoff():
            raise InvalidTransitionError("The job is not overdue.")
        job_publish(job)
        overdue = (timezone.now() - job.due_at).total_seconds() if job.due_at else None
        return Change(
            EventType.JOB_REDISPATCHED, {"overdue_seconds": overdue}, {"due_at": timezone.now()}
        )

    return job_update_locked(job_id=job_id, plan=plan, actor=actor)


def redispatch_cutoff() -> datetime:
    """A queued job due before this moment has waited too long for its message."""
    return timezone.now() - timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS)
