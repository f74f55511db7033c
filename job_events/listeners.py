"""The delivery side's hooks on the event writer, registered with ``runner_jobs.services.events``
by ``JobEventsConfig.ready``, so the writer of events never imports delivery
(docs/decisions/0090-app-layers.md): with a write's events, their webhook deliveries are written
to the outbox; after its commit, they are handed to the broker and the job's streams are woken."""

from django.db import transaction

from job_events.herald import webhook_deliveries_publish, webhook_deliveries_record
from job_events.notify import job_events_notify
from runner_jobs.models import JobEvent


def events_recorded(events: list[JobEvent], workspace_id: int) -> None:
    """Inside the write's transaction: the events' deliveries, as outbox rows that commit or roll
    back with them; handed to the broker after the commit. ``robust``: a broker outage is logged,
    never raised into the writer, and the outbox sweep sends the deliveries later."""
    pending_ids = webhook_deliveries_record(events=events, workspace_id=workspace_id)
    if pending_ids:
        transaction.on_commit(lambda: webhook_deliveries_publish(pending_ids), robust=True)


def events_committed(events: list[JobEvent], workspace_id: int) -> None:
    """After the commit of a write's ``events`` (one job's, or a batch's): wake each job's
    streams once (a robust on-commit hook: a Redis outage is logged, never raised into the
    writer; streams still find the events by polling)."""
    job_events_notify(job_ids=list(dict.fromkeys(event.job_id for event in events)))
