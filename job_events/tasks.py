"""Thin Celery tasks of the herald: take ids, call ``job_events.herald``."""

from typing import Any

from celery import shared_task

from job_events.herald import webhook_deliver


@shared_task(bind=True, max_retries=None, acks_late=True, ignore_result=True)
def webhook_deliver_task(self: Any, endpoint_id: int, event_id: int) -> None:
    """One delivery attempt of one event to one endpoint; a failure schedules the next attempt
    with the herald's backoff (``webhook_deliver`` decides when to give up)."""
    delay = webhook_deliver(
        endpoint_id=endpoint_id, event_id=event_id, attempt=self.request.retries + 1
    )
    if delay is not None:
        raise self.retry(countdown=delay)
