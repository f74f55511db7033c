"""What a coordinator key may see: the jobs of its workspaces, or of all when it lists none."""

import uuid

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from runner_jobs.errors import JobNotFoundError
from runner_jobs.models import RunnerJob
from workspaces.models import Workspace

from .models import CoordinatorKey


def key_workspace_ids(key: CoordinatorKey) -> list[int] | None:
    """The ids of the workspaces ``key`` is limited to; None when it may touch every one."""
    ids = list(key.workspaces.values_list("pk", flat=True))
    return ids or None


def workspaces_for_key(key: CoordinatorKey) -> QuerySet[Workspace]:
    ids = key_workspace_ids(key)
    workspaces = Workspace.objects.all()
    return workspaces if ids is None else workspaces.filter(pk__in=ids)


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
