"""The two ways a job is locked for a write, and the one function that writes a change.

* ``job_update_locked``: ``select_for_update()`` inside ``transaction.atomic()``. Executors'
  status changes (worker and coordinator start/complete/fail, the sweeper) use it, so of any
  number of racing terminal reports exactly one wins and the rest see a terminal job.
* ``job_update_optimistic``: read, decide, then ``UPDATE ... WHERE id = %s AND version = %s``;
  zero rows means someone else changed the job, so re-read and decide again (3 attempts, with
  exponential backoff and jitter), then ``ConcurrentUpdateError``. Reports and user actions use
  it, so a click never waits behind a worker's transaction.

Either way the change goes through ``job_write``: the versioned UPDATE (which takes the row lock
until commit), then the rows that belong with it and its one event, in the same transaction.
See docs/decisions/0001-locking.md.
"""

import hmac
import random
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from runner_jobs import metrics
from runner_jobs.errors import (
    ConcurrentUpdateError,
    JobNotFoundError,
    PreconditionFailedError,
    StaleLeaseError,
)
from runner_jobs.models import JobStatus, RunnerJob

from . import flow, statements
from .bell import bell_on_slot_freed
from .changes import Change, LeaseToken, Plan
from .events import (
    event_record,
    events_by_workspace_committed_on_commit,
    events_committed_on_commit,
)

OPTIMISTIC_ATTEMPTS = 3
RUNNING = JobStatus.RUNNING
OPTIMISTIC_BACKOFF_BASE_SECONDS = 0.01


def lease_check(job: RunnerJob, lease_token: LeaseToken) -> None:
    """Fencing: a report that names a lease must name the current one.

    A report without a token is not fenced (an operator's or a simple coordinator's call); one
    with a token from an earlier attempt is refused, whatever the job's state now.
    """
    # Compared in constant time: how long a refusal takes says nothing about the current token.
    current = "" if job.lease_token is None else str(job.lease_token)
    if lease_token is not None and not hmac.compare_digest(
        current.encode(), str(lease_token).encode()
    ):
        metrics.stale_lease_observed()
        raise StaleLeaseError()


def job_get(job_id: uuid.UUID | str, queryset: QuerySet[RunnerJob] | None = None) -> RunnerJob:
    try:
        return (queryset if queryset is not None else RunnerJob.objects).get(pk=job_id)
    except (RunnerJob.DoesNotExist, ValidationError) as exc:
        raise JobNotFoundError() from exc


def _expected_version_check(job: RunnerJob, expected_version: int | None) -> None:
    if expected_version is not None and job.version != expected_version:
        raise PreconditionFailedError()


def job_lock(job_id: uuid.UUID | str) -> RunnerJob:
    """The job's row, locked until the surrounding transaction ends."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("job_lock must run inside transaction.atomic()")
    return job_get(job_id, flow.with_type_capped(RunnerJob.objects.select_for_update()))


def jobs_lock(job_ids: Sequence[uuid.UUID]) -> list[RunnerJob]:
    """The rows of ``job_ids`` that exist (with their workspace), locked until the surrounding
    transaction ends; taken in id order, so two batches never wait for each other in a cycle."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("jobs_lock must run inside transaction.atomic()")
    return list(
        flow.with_type_capped(RunnerJob.objects.select_related("workspace"))
        .select_for_update(of=("self",))
        .filter(pk__in=job_ids)
        .order_by("pk")
    )


def jobs_lock_claimable(
    *, types: list[str], limit: int, workspace_ids: list[int] | None
) -> list[tuple[RunnerJob, int | None]]:
    """Lock up to ``limit`` runnable jobs of ``types`` (the dispatcher's predicate,
    ``flow.runnable_sql``), skipping rows another claimer holds, highest priority first, then
    oldest; each with its type's ``max_running`` in its workspace (None: no cap)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("jobs_lock_claimable must run inside transaction.atomic()")
    runnable, params = flow.runnable_sql("j", types=types, now=timezone.now())
    if workspace_ids is not None:
        runnable += " AND j.workspace_id = ANY(%s)"
        params.append(workspace_ids)
    sql = (
        f'SELECT j.*, {flow.type_cap_sql("j")} AS type_cap FROM "{RunnerJob._meta.db_table}" j '
        f"WHERE {runnable} "
        "ORDER BY j.priority DESC, j.created_at LIMIT %s FOR UPDATE OF j SKIP LOCKED"
    )
    jobs = RunnerJob.objects.raw(sql, [*params, limit])
    return [(job, vars(job).pop("type_cap")) for job in jobs]


def job_write(job: RunnerJob, change: Change, actor: str) -> RunnerJob:
    """Apply ``change`` to ``job`` if its version is still the one read; write its event.

    Used directly only on rows this transaction created or already holds locked."""
    was = job.status
    with transaction.atomic():
        updated = RunnerJob.objects.filter(pk=job.pk, version=job.version).update(
            **change.fields, version=F("version") + 1
        )
        if not updated:
            raise ConcurrentUpdateError()
        for name, value in change.fields.items():
            setattr(job, name, value)
        job.version += 1
        step = change.extra(job) if change.extra else None
        event_record(
            job=job, type=change.event_type, actor=actor, payload=change.event_payload, step=step
        )
        if change.on_commit:
            transaction.on_commit(change.on_commit)
        bell_on_slot_freed(job, was=was, type_capped=lambda: _type_capped(job))
        metrics.job_change_observed(
            job=job, event_type=change.event_type, actor=actor, transition="status" in change.fields
        )
    return job


def _type_capped(job: RunnerJob) -> bool:
    """Whether ``job``'s type has a ``max_running`` in its workspace: read with the job by
    ``job_lock`` and ``job_update_optimistic`` (no query of its own), else asked now."""
    capped: bool | None = getattr(job, "type_capped", None)
    return flow.type_capped(job) if capped is None else capped


def jobs_write(writes: Sequence[tuple[RunnerJob, Change]], actor: str) -> None:
    """``job_write`` for a batch of jobs this transaction holds locked (``jobs_lock``), whose
    changes are of one kind (one event type, the same field values; each its own payload and
    ``extra``): the versioned UPDATEs and their events in one statement
    (``statements.jobs_update_each``), then the side effects once for the batch."""
    if not writes:
        return
    kind = writes[0][1]
    if any(
        change.event_type != kind.event_type or change.fields != kind.fields or change.on_commit
        for _, change in writes
    ):
        raise ValueError("A batch writes changes of one kind, without on_commit hooks.")
    jobs = [job for job, _ in writes]
    columns = {field.name: field for field in RunnerJob._meta.concrete_fields}
    fields = {columns[name]: value for name, value in kind.fields.items()}
    events = statements.jobs_update_each(
        jobs=jobs,
        assignments=[
            statements.Assignment(
                field.column, "%s", (field.get_db_prep_save(value, connection=connection),)
            )
            for field, value in fields.items()
        ],
        event_type=kind.event_type,
        actor=actor,
        payloads=[change.event_payload for _, change in writes],
    )
    if len(events) != len(jobs):
        raise ConcurrentUpdateError()  # a row was not locked by this transaction after all
    for job, change in writes:
        was = job.status
        for name, value in change.fields.items():
            setattr(job, name, value)
        job.version += 1
        if change.extra:
            change.extra(job)
        bell_on_slot_freed(job, was=was, type_capped=partial(_type_capped, job))
    events_by_workspace_committed_on_commit(
        events, workspace_of={job.pk: job.workspace_id for job in jobs}
    )
    metrics.jobs_changes_observed(
        jobs=jobs,
        event_types=[kind.event_type],
        actor=actor,
        transition="status" in kind.fields,
    )


def job_update_locked(
    *, job_id: uuid.UUID | str, plan: Plan, actor: str, expected_version: int | None = None
) -> RunnerJob:
    """Lock the job's row, let ``plan`` check and decide, write the change and its event."""
    with transaction.atomic():
        job = job_lock(job_id)
        _expected_version_check(job, expected_version)
        return job_write(job, plan(job), actor)


def _backoff_sleep(attempt: int) -> None:
    ceiling = OPTIMISTIC_BACKOFF_BASE_SECONDS * (2**attempt)
    time.sleep(random.uniform(ceiling / 2, ceiling))


def job_update_optimistic(
    *, job_id: uuid.UUID | str, plan: Plan, actor: str, expected_version: int | None = None
) -> RunnerJob:
    """Read, decide with ``plan``, write if the version is unchanged; on a conflict re-read and
    decide again, ``OPTIMISTIC_ATTEMPTS`` times in all, then raise ``ConcurrentUpdateError``."""
    attempt = 0
    while True:
        job = job_get(job_id, flow.with_type_capped(RunnerJob.objects.all()))
        _expected_version_check(job, expected_version)
        change = plan(job)
        try:
            return job_write(job, change, actor)
        except ConcurrentUpdateError:
            attempt += 1
            metrics.optimistic_conflict_observed(retried=attempt < OPTIMISTIC_ATTEMPTS)
            if attempt == OPTIMISTIC_ATTEMPTS:
                raise
            _backoff_sleep(attempt - 1)


def _first_extra(written: statements.Written) -> Callable[[], bool]:
    return lambda: bool(written.extra and written.extra[0])


def job_update_conditional(
    *,
    job_id: uuid.UUID | str,
    statuses: frozenset[str],
    lease_token: LeaseToken,
    refuse: Callable[[RunnerJob], None],
    **write: Any,
) -> RunnerJob:
    """A report or terminal move as one conditional statement (``statements.job_update_where``):
    the UPDATE's row lock serialises racing writers, so of many terminal reports exactly one
    matches. When nothing matched, the job is read once to raise the right refusal (not found,
    ``stale_lease``, or ``refuse``'s ``invalid_transition``); if that read finds the job
    acceptable after all (it changed in between), the statement runs again."""
    transition = any(a.column == "status" for a in write["assignments"])
    # A move out of ``running`` learns in the same statement whether it frees a capped type's
    # slot (decision 0141): no query of its own on a worker's completion.
    capped = (flow.type_capped_sql("job"),) if transition and RUNNING in statuses else ()
    for _ in range(OPTIMISTIC_ATTEMPTS):
        written = statements.job_update_where(
            job_id=job_id,
            statuses=list(statuses),
            lease_token=lease_token,
            select_extra=capped,
            **write,
        )
        if written is not None:
            job = written.job
            events_committed_on_commit(written.events, workspace_id=job.workspace_id)
            bell_on_slot_freed(
                job,
                was=JobStatus.RUNNING if RUNNING in statuses else "",
                type_capped=_first_extra(written),
            )
            metrics.job_changes_observed(
                job=job,
                event_types=[write["event_type"]],
                actor=write["actor"],
                transition=transition,
            )
            return job
        job = job_get(job_id)
        lease_check(job, lease_token)
        refuse(job)
    raise ConcurrentUpdateError()
