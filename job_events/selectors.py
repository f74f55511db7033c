"""Reads of job events for streams and webhooks."""

import uuid
from dataclasses import dataclass

from job_events.models import JobEvent, WebhookEndpoint
from runner_jobs.models import TERMINAL_STATUSES, RunnerJob


@dataclass(frozen=True)
class EventBatch:
    events: list[JobEvent]
    # The job had ended before ``events`` were read, so its terminal event is in this batch or
    # an earlier one: a reader that has nothing newer left may stop.
    job_ended: bool


def job_events_after(*, job_id: uuid.UUID | str, after: int, limit: int) -> EventBatch:
    """Up to ``limit`` events of ``job_id`` with an id greater than ``after``, oldest first.

    "id > last seen" is a safe cursor only because one job's event ids become visible in id
    order: every writer takes the job's row lock (the versioned UPDATE in
    ``runner_jobs.services.locking.job_write``, or ``select_for_update``) *before* inserting its
    event and holds it until commit, so a second writer of the same job draws its id from the
    sequence only after the first one committed. Without that lock, ids 10 and 11 could commit
    as 11 then 10, and a reader that saw 11 would skip 10 forever (docs/decisions/0002).
    Events of different jobs have no such order; this never mixes jobs.
    """
    # Status first, events second: if the job had ended at the first read, the second one (a
    # later snapshot) sees its terminal event.
    status = RunnerJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    events = list(
        JobEvent.objects.filter(job__pk=job_id, id__gt=after).order_by("timestamp", "id")[:limit]
    )
    return EventBatch(events=events, job_ended=status in TERMINAL_STATUSES)


def webhook_endpoints_active(*, workspace_id: int) -> list[WebhookEndpoint]:
    """The active endpoints of a workspace (one query; usually none)."""
    return list(WebhookEndpoint.objects.filter(workspace_id=workspace_id, is_active=True))


def event_type_matches(patterns: list[str], event_type: str) -> bool:
    """``patterns`` hold exact types, ``"*"`` (every type) or a prefix like ``"job.*"``."""
    return any(
        p == "*" or p == event_type or (p.endswith(".*") and event_type.startswith(p[:-1]))
        for p in patterns
    )
