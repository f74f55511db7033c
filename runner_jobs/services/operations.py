"""Bulk operations: cancel or retry every job a filter matched, as one tracked ``Operation``
(SPEC §9; docs/decisions/0131-bulk-operations.md).

* Creating one fixes its job set: the ids the filter matches are copied into ``OperationJob``
  rows by one ``INSERT ... SELECT`` in the transaction that creates the operation.
* ``OPERATION_RUNNERS`` Celery tasks (``runner_jobs.run_operation``) work through them side by
  side, a batch of ``OPERATION_BATCH_SIZE`` per transaction: the batch's rows taken with
  ``FOR UPDATE SKIP LOCKED`` (so runners never share a job), its jobs through
  ``jobs_cancel``/``jobs_retry`` (the single services' rules, set-based: a fixed number of
  statements per batch) with ``{"operation": <id>}`` in their events, then the rows deleted and
  the counts added. A batch commits whole or not at all, so the counts are exact even if a
  worker dies; job ids in ascending order make runners lock jobs in one order (no deadlock).
  A batch that fails as a whole is done again job by job through ``job_cancel``/``job_retry``.
* Cancelling the operation stops every runner before its next batch.
* A run stops after ``OPERATION_TASK_SECONDS`` and sends itself again, so an operation does not
  hold a worker process for long; runs whose messages were lost are sent again by
  ``operations_resume`` (beat) once the operation has not progressed for
  ``OPERATION_STALL_SECONDS``.
"""

import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError

from config.celery import app as celery_app
from runner_jobs.errors import (
    InvalidTransitionError,
    JobInputError,
    JobNotFoundError,
    JobServiceError,
)
from runner_jobs.filters import BulkJobFilter, filter_query
from runner_jobs.models import (
    Operation,
    OperationAction,
    OperationJob,
    OperationStatus,
    RunnerJob,
)
from workspaces.models import Workspace

from .jobs import job_cancel, job_retry, jobs_cancel, jobs_retry

logger = logging.getLogger(__name__)

RUN_OPERATION_TASK_NAME = "runner_jobs.run_operation"
OPERATION_BATCH_SIZE = 100
# Runs working on one operation at once: each takes a worker process; two use both cores here.
OPERATION_RUNNERS = 2
OPERATION_TASK_SECONDS = 30.0
OPERATION_STALL_SECONDS = 120
SUCCEEDED, SKIPPED, FAILED = "succeeded", "skipped", "failed"

INSERT_JOBS_SQL = (
    "INSERT INTO {table} (operation_id, job_id) SELECT %s, matched.id FROM ({query}) AS matched"
)


def jobs_matching(*, workspace: Workspace, filters: Mapping[str, Any]) -> QuerySet[RunnerJob]:
    """The jobs of ``workspace`` that ``filters`` (the job list's filters, as an object) select.
    ``JobInputError`` with the filter's field errors under ``"filter"`` when it is not valid,
    including one that names another workspace."""
    named = filters.get("workspace")
    if named not in (None, "", workspace.slug):
        raise JobInputError(
            {"filter": {"workspace": [f"Must be the operation's workspace ({workspace.slug})."]}}
        )
    filterset = BulkJobFilter(
        data=filter_query(filters), queryset=RunnerJob.objects.filter(workspace=workspace)
    )
    if not filterset.is_valid():
        errors = {name: list(messages) for name, messages in filterset.errors.items()}
        raise JobInputError({"filter": errors})
    return filterset.qs


def operation_create(
    *,
    workspace: Workspace,
    action: str,
    filters: Mapping[str, Any],
    actor: str,
    created_by: User | None = None,
) -> Operation:
    """Start a bulk ``action`` (cancel or retry) on the jobs ``filters`` matches now."""
    if action not in OperationAction.values:
        raise JobInputError({"action": [f"Must be one of {', '.join(OperationAction.values)}."]})
    jobs = jobs_matching(workspace=workspace, filters=filters)
    return operation_start(
        jobs=jobs,
        action=action,
        workspace=workspace,
        filters=dict(filters),
        actor=actor,
        created_by=created_by,
    )


def operation_start(
    *,
    jobs: QuerySet[RunnerJob],
    action: str,
    workspace: Workspace | None,
    filters: dict[str, Any],
    actor: str,
    created_by: User | None = None,
) -> Operation:
    """Start a bulk ``action`` on the jobs of ``jobs`` (any query: the API's filter, or the
    admin's selection, whose ``filters`` only describe it)."""
    with transaction.atomic():
        operation = Operation.objects.create(
            workspace=workspace,
            action=action,
            filter=filters,
            actor=actor,
            created_by=created_by,
            progressed_at=timezone.now(),
        )
        # In id order: the (operation, job_id) index then grows at its right edge.
        query, params = jobs.order_by("id").values("id").query.sql_with_params()
        sql = INSERT_JOBS_SQL.format(
            table=connection.ops.quote_name(OperationJob._meta.db_table), query=query
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [operation.pk, *params])
            operation.matched = cursor.rowcount
        fields: dict[str, Any] = {"matched": operation.matched}
        if operation.matched == 0:
            fields.update(status=OperationStatus.COMPLETED, finished_at=timezone.now())
        else:
            operation_id = operation.pk
            transaction.on_commit(
                lambda: operation_publish(operation_id=operation_id, runs=OPERATION_RUNNERS)
            )
        Operation.objects.filter(pk=operation.pk).update(**fields)
    operation.refresh_from_db()
    return operation


def operation_publish(*, operation_id: uuid.UUID | str, runs: int = 1) -> bool:
    """Send ``runs`` messages that run the operation; False (logged) when the broker refuses,
    in which case ``operations_resume`` sends them later."""
    try:
        for _ in range(runs):
            celery_app.send_task(RUN_OPERATION_TASK_NAME, args=[str(operation_id)])
    except OperationalError:
        logger.warning("operation_publish_failed", extra={"operation": str(operation_id)})
        return False
    return True


def operation_cancel(*, operation_id: uuid.UUID | str) -> Operation:
    """``running`` -> ``cancelled``: the batches in progress (one per runner) finish and add
    their counts, no further batch starts. ``InvalidTransitionError`` once it has ended."""
    updated = Operation.objects.filter(pk=operation_id, status=OperationStatus.RUNNING).update(
        status=OperationStatus.CANCELLED, finished_at=timezone.now()
    )
    if not updated:
        if not Operation.objects.filter(pk=operation_id).exists():
            raise JobNotFoundError("No such operation.")
        raise InvalidTransitionError("Only a running operation can be cancelled.")
    return Operation.objects.get(pk=operation_id)


def _refusal_outcome(operation: Operation, job_id: uuid.UUID, exc: JobServiceError) -> str:
    if isinstance(exc, InvalidTransitionError | JobNotFoundError):
        return SKIPPED  # its state does not allow the action, or retention deleted it
    logger.warning(
        "operation_job_failed",
        extra={"operation": str(operation.pk), "job": str(job_id), "error": exc.detail},
    )
    return FAILED


def _job_apply(operation: Operation, job_id: uuid.UUID) -> str:
    """One job of the operation, through the single cancel or retry; the outcome to count."""
    extra = {"operation": str(operation.pk)}
    # No savepoint of our own: each service writes inside its own ``atomic`` block, a savepoint
    # here, so a refused or failed job leaves the batch's transaction usable.
    try:
        if operation.action == OperationAction.CANCEL:
            job_cancel(job_id=job_id, actor=operation.actor, event_extra=extra)
        else:
            job_retry(
                job_id=job_id,
                actor=operation.actor,
                created_by=operation.created_by,
                event_extra=extra,
            )
    except JobServiceError as exc:
        return _refusal_outcome(operation, job_id, exc)
    except Exception:
        logger.exception("operation_job_error", extra={"operation": str(operation.pk)})
        return FAILED
    return SUCCEEDED


def _batch_apply(operation: Operation, job_ids: list[uuid.UUID]) -> Counter[str]:
    """The batch's jobs through the batch service of the action (``jobs_cancel``/``jobs_retry``:
    the single services' rules, set-based); the outcomes to count. If the batch fails as a whole
    (an unexpected error, a retry whose new job is refused), its savepoint is rolled back and
    its jobs go one by one through the single service, so one bad job costs only its own."""
    extra = {"operation": str(operation.pk)}
    try:
        with transaction.atomic():
            if operation.action == OperationAction.CANCEL:
                done = jobs_cancel(job_ids=job_ids, actor=operation.actor, event_extra=extra)
            else:
                done = jobs_retry(
                    job_ids=job_ids,
                    actor=operation.actor,
                    created_by=operation.created_by,
                    event_extra=extra,
                )
    except Exception:
        logger.warning(
            "operation_batch_one_by_one", extra={"operation": str(operation.pk)}, exc_info=True
        )
        return Counter(_job_apply(operation, job_id) for job_id in job_ids)
    outcomes = Counter({SUCCEEDED: len(done.changed)})
    for job_id, exc in done.refused.items():
        outcomes[_refusal_outcome(operation, job_id, exc)] += 1
    return outcomes


def _batch_run(operation_id: uuid.UUID | str) -> bool:
    """One batch in one transaction; False when the operation is no longer running or no job
    is left for this run (others may still hold theirs)."""
    with transaction.atomic():
        operation = Operation.objects.select_related("created_by").get(pk=operation_id)
        if operation.status != OperationStatus.RUNNING:
            return False
        batch = list(
            OperationJob.objects.filter(operation=operation)
            .order_by("job_id")
            .select_for_update(skip_locked=True)
            .values_list("pk", "job_id")[:OPERATION_BATCH_SIZE]
        )
        if not batch:
            return False
        outcomes = _batch_apply(operation, [job_id for _, job_id in batch])
        OperationJob.objects.filter(pk__in=[pk for pk, _ in batch]).delete()
        counts = {name: F(name) + outcomes[name] for name in (SUCCEEDED, SKIPPED, FAILED)}
        Operation.objects.filter(pk=operation.pk).update(**counts, progressed_at=timezone.now())
    return True


def _complete_if_done(operation_id: uuid.UUID | str) -> None:
    """``running`` -> ``completed`` once no job is left. Every run checks after its last batch
    committed, so the run that commits last sees none left and completes it."""
    Operation.objects.filter(pk=operation_id, status=OperationStatus.RUNNING).exclude(
        Exists(OperationJob.objects.filter(operation=OuterRef("pk")))
    ).update(status=OperationStatus.COMPLETED, finished_at=timezone.now())


def operation_run(
    *, operation_id: uuid.UUID | str, seconds: float = OPERATION_TASK_SECONDS
) -> Operation | None:
    """Work through the operation's jobs, batch after batch, until none is left or it is
    cancelled, or for about ``seconds`` (then it sends itself again). None if it no longer
    exists."""
    deadline = time.monotonic() + seconds
    try:
        while _batch_run(operation_id):
            if time.monotonic() >= deadline:
                operation_publish(operation_id=operation_id)
                break
        else:
            _complete_if_done(operation_id)
    except Operation.DoesNotExist:
        return None
    return Operation.objects.get(pk=operation_id)


def operations_resume() -> int:
    """Send again every running operation that has not progressed for
    ``OPERATION_STALL_SECONDS`` (its message was lost, or its worker died); how many were sent.
    A duplicate is harmless: runs of one operation take its row lock in turn."""
    stalled_before = timezone.now() - timedelta(seconds=OPERATION_STALL_SECONDS)
    stalled = Operation.objects.filter(
        status=OperationStatus.RUNNING, progressed_at__lt=stalled_before
    ).values_list("pk", flat=True)
    return sum(operation_publish(operation_id=pk, runs=OPERATION_RUNNERS) for pk in stalled)
