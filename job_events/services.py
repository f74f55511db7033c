"""The one writer of job events."""

from typing import Any

from django.db import transaction

from job_events.herald import event_committed_on_commit
from job_events.models import JobEvent
from runner_jobs.models import JobStep, RunnerJob


def event_record(
    *,
    job: RunnerJob,
    type: str,
    actor: str,
    payload: dict[str, Any] | None = None,
    step: JobStep | None = None,
) -> JobEvent:
    """Insert one event for ``job`` inside the caller's transaction.

    Callers must already hold the job's row lock (``select_for_update`` or the versioned
    UPDATE) in this transaction: that serialises one job's writers, so event ids become
    visible in id order per job and a reader asking for "id > last seen" never skips one.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_record must run inside the transaction of the job change")
    event = JobEvent.objects.create(
        job=job, type=type, actor=actor, payload=payload or {}, step=step
    )
    # After commit, wake the job's streams and queue its webhooks (ids only).
    event_committed_on_commit(event, workspace_id=job.workspace_id)
    return event
