"""Thin Celery tasks of the herald: take ids, call ``job_events.herald``."""

import threading
from contextlib import ExitStack
from typing import Any

from celery import shared_task
from celery.signals import task_postrun, task_prerun

from job_events.herald import webhook_deliver, webhook_endpoints_memo

# The memo blocks of the tasks running in this thread, innermost last (an eager task can run
# inside another, or inside itself when it retries).
_task_memos = threading.local()


@task_prerun.connect
def _task_memo_open(**kwargs: Any) -> None:
    """Every task, like every request, reads a workspace's webhook endpoints once."""
    stack = ExitStack()
    stack.enter_context(webhook_endpoints_memo())
    _task_memos.__dict__.setdefault("stacks", []).append(stack)


@task_postrun.connect
def _task_memo_close(**kwargs: Any) -> None:
    stacks: list[ExitStack] = _task_memos.__dict__.get("stacks", [])
    if stacks:
        stacks.pop().close()


@shared_task(bind=True, max_retries=None, acks_late=True, ignore_result=True)
def webhook_deliver_task(self: Any, endpoint_id: int, event_id: int) -> None:
    """One delivery attempt of one event to one endpoint; a failure schedules the next attempt
    with the herald's backoff (``webhook_deliver`` decides when to give up)."""
    delay = webhook_deliver(
        endpoint_id=endpoint_id, event_id=event_id, attempt=self.request.retries + 1
    )
    if delay is not None:
        raise self.retry(countdown=delay)
