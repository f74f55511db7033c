"""Thin Celery tasks of the herald: take ids, call ``job_events.herald``."""

import threading
from contextlib import ExitStack
from typing import Any

from celery import shared_task
from celery.signals import task_postrun, task_prerun

from job_events.herald import (
    DELIVER_TASK_NAME,
    DELIVERY_SOFT_TIME_LIMIT_SECONDS,
    DELIVERY_TIME_LIMIT_SECONDS,
    webhook_deliver,
    webhook_endpoints_memo,
    webhook_outbox_sweep,
)

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


@shared_task(
    bind=True,
    name=DELIVER_TASK_NAME,
    max_retries=None,
    acks_late=True,
    ignore_result=True,
    soft_time_limit=DELIVERY_SOFT_TIME_LIMIT_SECONDS,
    time_limit=DELIVERY_TIME_LIMIT_SECONDS,
)
def webhook_deliver_task(self: Any, pending_id: int) -> None:
    """The next attempt of one pending delivery; a failure, or a busy endpoint, runs the task
    again after the delay ``webhook_deliver`` returns (it decides when to give up)."""
    delay = webhook_deliver(pending_id=pending_id)
    if delay is not None:
        raise self.retry(countdown=delay)


@shared_task(name="job_events.send_pending_deliveries", ignore_result=True)
def webhook_outbox_sweep_task() -> int:
    """Beat, every sweep interval: send again the deliveries the broker never got."""
    return webhook_outbox_sweep()
