"""The doorbell of Celery workers: a message that says "a job may be runnable". The worker that
receives one claims the best runnable job (``flow``), whichever job rang."""

import logging
from collections.abc import Callable

from django.db import transaction
from kombu.exceptions import OperationalError

from config.celery import app as celery_app
from runner_jobs.errors import BrokerUnavailableError
from runner_jobs.models import JobStatus, RunnerJob

logger = logging.getLogger(__name__)

EXECUTE_TASK_NAME = "runner_jobs.execute_job"
HIGHEST_JOB_PRIORITY = 9
# A delayed bell rings this long after its job's due time, so it never finds the job not yet
# due (a bell that finds nothing is not rung again).
BELL_MARGIN_SECONDS = 0.05


def broker_priority(priority: int) -> int:
    """Our priority (0-9, higher runs first) as kombu's Redis priority (0-9, LOWER first)."""
    return HIGHEST_JOB_PRIORITY - priority


def bell_ring(*, job_id: str | None = None, priority: int = 5, countdown: float = 0) -> None:
    """Send one doorbell (``job_id``, the job that rang, for logs only), ``countdown`` seconds
    from now; ``BrokerUnavailableError`` when the broker refuses."""
    try:
        celery_app.send_task(
            EXECUTE_TASK_NAME,
            args=[job_id] if job_id else [],
            priority=broker_priority(priority),
            countdown=countdown + BELL_MARGIN_SECONDS if countdown else None,
            # None, not omitted: otherwise Celery copies the sending process's time limits into
            # the message (when that process has the task registered), overriding the worker's.
            time_limit=None,
            soft_time_limit=None,
        )
    except OperationalError as exc:
        raise BrokerUnavailableError(f"The broker is unreachable: {exc}") from exc


def _ring_quietly() -> None:
    try:
        bell_ring()
    except BrokerUnavailableError as exc:
        logger.warning("slot freed, bell not rung (the sweeper will): %s", exc.detail)


def bell_on_slot_freed(job: RunnerJob, *, was: str, type_capped: Callable[[], bool]) -> None:
    """After commit, ring when ``job`` left ``running`` holding a slot someone may wait for: one
    bell for its concurrency key's slot, one for its type's ``max_running`` slot in its
    workspace (``type_capped``, asked only when the job did leave ``running``). A job waiting
    for that slot starts now, not at the next sweep (its own bell found the slot taken and did
    nothing)."""
    if was != JobStatus.RUNNING or job.status == JobStatus.RUNNING:
        return
    for _ in range(bool(job.concurrency_key) + type_capped()):
        transaction.on_commit(_ring_quietly, robust=True)
