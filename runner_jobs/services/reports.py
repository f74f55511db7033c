"""A coordinator's status reports. ``{"status": ...}`` names where the job should be, not how
to get there; this maps it onto the service that owns that move, with the job's row locked for
the whole decision, so racing reports are decided one at a time."""

import uuid

from django.db import transaction

from runner_jobs.errors import JobInputError, NotRunnableError
from runner_jobs.models import JobStatus, RunnerJob

from . import flow
from .changes import Change, LeaseToken, requeue_change
from .jobs import (
    job_cancel,
    job_complete,
    job_fail,
    job_queue,
    job_start,
)
from .locking import job_lock, job_update_locked, lease_check
from .transitions import require_status, transition_check

S = JobStatus

REPORTED_FAILURE_ERROR = "Reported failed by the coordinator."


def job_release(
    *, job_id: uuid.UUID | str, actor: str, lease_token: LeaseToken = None
) -> RunnerJob:
    """``running`` -> ``queued``: the executor hands the job back (it cannot run it now). The
    attempt still counts and its lease is void; the next claim starts a new attempt."""

    def plan(job: RunnerJob) -> Change:
        lease_check(job, lease_token)
        require_status(job.status, frozenset({S.RUNNING}), "release")
        payload = {"reason": "released", "attempt": job.attempts}
        return requeue_change(payload)

    return job_update_locked(job_id=job_id, plan=plan, actor=actor)


def job_status_report(
    *,
    job_id: uuid.UUID | str,
    status: str,
    actor: str,
    worker: str,
    lease_token: LeaseToken = None,
    error: str = "",
) -> RunnerJob:
    """Move the job to ``status`` under its row lock: the lease and the state machine are
    checked first (``StaleLeaseError``, ``InvalidTransitionError``), then the owning service
    makes the move. ``running`` starts a new attempt for ``worker`` (a fresh lease) if the
    dispatcher's rule lets the job start now (else ``NotRunnableError``); ``failed`` keeps
    ``error``."""
    if status not in S.values:
        raise JobInputError({"status": [f"Must be one of {', '.join(S.values)}."]})
    with transaction.atomic():
        job = job_lock(job_id)
        lease_check(job, lease_token)
        transition_check(job.status, status)
        # The services below run inside this transaction, on the row it already holds.
        if status == S.RUNNING:
            # A start by report obeys the dispatcher's rule, as a claim does (SPEC §8).
            failed = flow.start_allowed(job)
            if failed:
                raise NotRunnableError(job.pk, failed)
            return job_start(job_id=job_id, actor=actor, worker=worker)
        if status == S.QUEUED and job.status == S.PENDING:
            return job_queue(job_id=job_id, actor=actor)
        if status == S.QUEUED:
            return job_release(job_id=job_id, actor=actor, lease_token=lease_token)
        if status == S.COMPLETED:
            return job_complete(job_id=job_id, result=None, actor=actor, lease_token=lease_token)
        if status == S.FAILED:
            return job_fail(
                job_id=job_id,
                error=error or REPORTED_FAILURE_ERROR,
                actor=actor,
                lease_token=lease_token,
            )
        return job_cancel(job_id=job_id, actor=actor)
