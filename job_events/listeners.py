"""What follows an event's commit on the delivery side: wake the job's streams, then queue the
event's webhooks. Registered with ``runner_jobs.services.events`` by ``JobEventsConfig.ready``,
so the writer of events never imports delivery (docs/decisions/0090-app-layers.md)."""

from job_events.herald import webhook_endpoints_memoized
from job_events.notify import job_events_notify
from job_events.tasks import webhook_deliver_task
from runner_jobs.events import event_type_matches
from runner_jobs.models import JobEvent


def webhook_deliveries_enqueue(*, event_id: int, workspace_id: int, event_type: str) -> int:
    """Queue one delivery task per endpoint that wants the event (ids only); how many."""
    endpoints = [
        endpoint
        for endpoint in webhook_endpoints_memoized(workspace_id)
        if event_type_matches(endpoint.event_types, event_type)
    ]
    for endpoint in endpoints:
        webhook_deliver_task.delay(endpoint.pk, event_id)
    return len(endpoints)


def events_committed(events: list[JobEvent], workspace_id: int) -> None:
    """After the commit of a write's ``events`` (one job's): wake the job's streams once, then
    queue their webhooks. Runs as a robust on-commit hook: a broker or Redis outage is logged,
    never raised into the writer (streams still find the events by polling)."""
    job_events_notify(job_id=events[0].job_id)
    for event in events:
        webhook_deliveries_enqueue(
            event_id=event.pk, workspace_id=workspace_id, event_type=event.type
        )
