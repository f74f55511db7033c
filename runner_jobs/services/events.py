"""The one writer of job events, and the hooks through which delivery (streams, webhooks) keeps
its state with events and learns of committed ones without this app importing it
(docs/decisions/0090-app-layers.md)."""

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.db import transaction

from runner_jobs.models import JobEvent, JobStep, RunnerJob

# Called after the commit of a write, with its events (oldest first; one job's, or a batch's, in
# job id order) and their workspace's id.
EventListener = Callable[[list[JobEvent], int], None]
_listeners: list[EventListener] = []


def event_listener_register(listener: EventListener) -> None:
    """Have ``listener`` called after the commit of every event (once per listener); apps that
    deliver events register theirs in ``AppConfig.ready``."""
    if listener not in _listeners:
        _listeners.append(listener)


# Called with a write's events where ``events_committed_on_commit`` is called, inside the
# write's transaction when it has one, for what must commit or roll back with the events (the
# webhook outbox). It runs under the job's row lock: it must be quick.
EventRecorder = Callable[[list[JobEvent], int], None]
_recorders: list[EventRecorder] = []


def event_recorder_register(recorder: EventRecorder) -> None:
    """Have ``recorder`` called with the events of every write, before its commit (once per
    recorder); apps that keep state with events register theirs in ``AppConfig.ready``."""
    if recorder not in _recorders:
        _recorders.append(recorder)


def _events_committed(events: list[JobEvent], workspace_id: int) -> None:
    for listener in _listeners:
        listener(events, workspace_id)


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
    events_committed_on_commit([event], workspace_id=job.workspace_id)
    return event


def events_committed_on_commit(events: list[JobEvent], *, workspace_id: int) -> None:
    """Hand ``events`` to the recorders now (in the write's transaction), then to the listeners
    after it commits (at once in autocommit): one hook per write, whatever the number of its
    events. ``robust``: the events are committed whatever a listener does, so its failure is
    logged, never raised."""
    if not events:
        return
    for recorder in _recorders:
        recorder(events, workspace_id)
    if _listeners:
        transaction.on_commit(lambda: _events_committed(events, workspace_id), robust=True)


def events_by_workspace_committed_on_commit(
    events: list[JobEvent], *, workspace_of: Mapping[uuid.UUID, int]
) -> None:
    """``events_committed_on_commit`` for a batch's events (several jobs', perhaps of several
    workspaces, ``workspace_of`` naming each job's): one hook per workspace."""
    by_workspace: dict[int, list[JobEvent]] = {}
    for event in events:
        by_workspace.setdefault(workspace_of[event.job_id], []).append(event)
    for workspace_id, workspace_events in by_workspace.items():
        events_committed_on_commit(workspace_events, workspace_id=workspace_id)
