"""What a coordinator key may see: the jobs of every workspace when it says so
(``all_workspaces``), else of the workspaces it lists, and nothing when none is left."""

import uuid
from functools import cache

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import QuerySet

from runner_jobs.errors import JobNotFoundError
from runner_jobs.models import RunnerJob
from workspaces.models import Workspace

from .models import CoordinatorKey


def key_workspace_ids(key: CoordinatorKey) -> list[int] | None:
    """The ids of the workspaces ``key`` is limited to (maybe none); None when it may touch
    every one."""
    if key.all_workspaces:
        return None
    return list(key.workspaces.values_list("pk", flat=True))


def key_workspace_slugs(key: CoordinatorKey) -> list[str] | None:
    """As ``key_workspace_ids``, by slug."""
    if key.all_workspaces:
        return None
    return sorted(key.workspaces.values_list("slug", flat=True))


def workspaces_for_key(key: CoordinatorKey) -> QuerySet[Workspace]:
    workspaces = Workspace.objects.all()
    return workspaces if key.all_workspaces else workspaces.filter(coordinator_keys=key)


def job_get_for_key(*, key: CoordinatorKey, job_id: uuid.UUID | str) -> RunnerJob:
    """The job, if ``key`` may touch its workspace; otherwise, as for a job that does not exist,
    ``JobNotFoundError`` (a 404 that does not reveal the job)."""
    try:
        return (
            RunnerJob.objects.select_related("workspace", "created_by")
            .filter(workspace__in=workspaces_for_key(key))
            .get(pk=job_id)
        )
    except (RunnerJob.DoesNotExist, ValidationError) as exc:
        raise JobNotFoundError() from exc


@cache
def _job_in_scope_sql() -> str:
    """One statement, built once per process: the job's id if it exists and is in the scope of
    the key (a limited key's workspaces are its rows in the key-workspace table)."""
    scope = CoordinatorKey._meta.get_field("workspaces")
    job, workspace = RunnerJob._meta.pk.column, RunnerJob._meta.get_field("workspace").column
    return (
        f'SELECT job."{job}" FROM "{RunnerJob._meta.db_table}" job WHERE job."{job}" = %s AND '
        f'(%s OR job."{workspace}" IN (SELECT m."{scope.m2m_reverse_name()}" '
        f'FROM "{scope.m2m_db_table()}" m WHERE m."{scope.m2m_column_name()}" = %s))'
    )


def job_id_for_key(*, key: CoordinatorKey, job_id: uuid.UUID | str) -> uuid.UUID:
    """As ``job_get_for_key``, for a report that needs only to know the job is the key's: its
    id (one precompiled query, no model built), or ``JobNotFoundError``."""
    try:
        pk = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(job_id)
    except ValueError as exc:
        raise JobNotFoundError() from exc
    with connection.cursor() as cursor:
        cursor.execute(_job_in_scope_sql(), [pk, key.all_workspaces, key.pk])
        if cursor.fetchone() is None:
            raise JobNotFoundError()
    return pk
