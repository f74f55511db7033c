"""Bulk operations: cancel or retry every job a filter matched, as one tracked ``Operation``
(SPEC §9; docs/decisions/0101-bulk-operations.md).

* Creating one fixes its job set: the ids the filter matches are copied into ``OperationJob``
  rows by one ``INSERT ... SELECT`` in the transaction that creates the operation.
* A Celery task (``runner_jobs.run_operation``) works through them in job id order, a batch of
  ``OPERATION_BATCH_SIZE`` per transaction: the operation's row locked, each job through
  ``job_cancel``/``job_retry`` (in a savepoint, with ``{"operation": <id>}`` in its event), then
  the counts and the cursor. A batch commits whole or not at all, so the counts are exact even if
  the worker dies; job ids in ascending order make two operations lock shared jobs in the same
  order (no deadlock).
* Cancelling the operation waits for the batch in progress and stops the next one.
* A run stops after ``OPERATION_TASK_SECONDS`` and sends itself again, so one operation does not
  hold a worker for long; a run whose message was lost is sent again by
  ``operations_resume`` (beat) once it has not progressed for ``OPERATION_STALL_SECONDS``.
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
from django.db.models import F, QuerySet
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

from .jobs import job_cancel, job_retry

logger = logging.getLogger(__name__)

RUN_OPERATION_TASK_NAME = "runner_jobs.run_operation"
OPERATION_BATCH_SIZE = 100
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
        query, params = jobs.order_by().values("id").query.sql_with_params()
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
            transaction.on_commit(lambda: operation_publish(operation_id=operation_id))
        Operation.objects.filter(pk=operation.pk).update(**fields)
    operation.refresh_from_db()
    return operation


def operation_publish(*, operation_id: uuid.UUID | str) -> bool:
    """Send the message that runs the operation; False (logged) when the broker refuses it, in
    which case ``operations_resume`` sends it later."""
    try:
        celery_app.send_task(RUN_OPERATION_TASK_NAME, args=[str(operation_id)])
    except OperationalError:
        logger.warning("operation_publish_failed", extra={"operation": str(operation_id)})
        return False
    return True


def operation_cancel(*, operation_id: uuid.UUID | str) -> Operation:
    """``running`` -> ``cancelled``: the batch in progress finishes (this waits for it), no
    further batch starts. ``InvalidTransitionError`` when the operation has already ended."""
    updated = Operation.objects.filter(pk=operation_id, status=OperationStatus.RUNNING).update(
        status=OperationStatus.CANCELLED, finished_at=timezone.now()
    )
    if not updated:
        if not Operation.objects.filter(pk=operation_id).exists():
            raise JobNotFoundError("No such operation.")
        raise InvalidTransitionError("Only a running operation can be cancelled.")
    return Operation.objects.get(pk=operation_id)


def _job_apply(operation: Operation, job_id: uuid.UUID) -> str:
    """One job of the operation, through the same service as a single cancel or retry; the
    outcome to count."""
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
    except (InvalidTransitionError, JobNotFoundError):
        return SKIPPED  # its state does not allow the action, or retention deleted it
    except JobServiceError as exc:
        logger.warning(
            "operation_job_failed",
            extra={"operation": str(operation.pk), "job": str(job_id), "error": exc.detail},
        )
        return FAILED
    except Exception:
        logger.exception("operation_job_error", extra={"operation": str(operation.pk)})
        return FAILED
    return SUCCEEDED


def _batch_run(operation_id: uuid.UUID | str) -> bool:
    """One batch in one transaction; whether more remain."""
    with transaction.atomic():
        operation = (
            Operation.objects.select_for_update(of=("self",))
            .select_related("created_by")
            .get(pk=operation_id)
        )
        if operation.status != OperationStatus.RUNNING:
            return False
        jobs = OperationJob.objects.filter(operation=operation)
        if operation.cursor is not None:
            jobs = jobs.filter(job_id__gt=operation.cursor)
        job_ids = list(
            jobs.order_by("job_id").values_list("job_id", flat=True)[:OPERATION_BATCH_SIZE]
        )
        outcomes = Counter(_job_apply(operation, job_id) for job_id in job_ids)
        now = timezone.now()
        fields: dict[str, Any] = {
            name: F(name) + outcomes[name] for name in (SUCCEEDED, SKIPPED, FAILED)
        }
        fields["progressed_at"] = now
        if job_ids:
            fields["cursor"] = job_ids[-1]
        more = len(job_ids) == OPERATION_BATCH_SIZE
        if not more:
            fields.update(status=OperationStatus.COMPLETED, finished_at=now)
        Operation.objects.filter(pk=operation.pk).update(**fields)
    return more


def operation_run(
    *, operation_id: uuid.UUID | str, seconds: float = OPERATION_TASK_SECONDS
) -> Operation | None:
    """Work through the operation's jobs, batch after batch, until it is done or cancelled, or
    for about ``seconds`` (then it sends itself again). None if it no longer exists."""
    deadline = time.monotonic() + seconds
    try:
        while _batch_run(operation_id):
            if time.monotonic() >= deadline:
                operation_publish(operation_id=operation_id)
                break
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
    return sum(operation_publish(operation_id=pk) for pk in stalled)
