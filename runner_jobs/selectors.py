"""Reads of jobs and their events. Every queryset an API user sees starts from ``jobs_for_user``,
so another workspace's job is simply not there (a 404, never a 403)."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from job_events.models import JobEvent
from runner_jobs.models import RunnerJob
from runner_jobs.services import JobNotFoundError
from workspaces.selectors import workspaces_for_user


def jobs_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[RunnerJob]:
    """The jobs of every workspace ``user`` is a member of, newest first."""
    return (
        RunnerJob.objects.filter(workspace__in=workspaces_for_user(user))
        .select_related("workspace", "created_by")
        .order_by("-created_at", "-id")
    )


def job_get_for_user(*, user: AbstractBaseUser | AnonymousUser, job_id: str) -> RunnerJob:
    """One job of ``user``'s workspaces. ``JobNotFoundError`` (a 404) when it does not exist, is
    in another workspace, or ``job_id`` is not even a UUID: the answer never tells them apart."""
    try:
        return jobs_for_user(user).get(pk=job_id)
    except (RunnerJob.DoesNotExist, ValidationError) as exc:
        raise JobNotFoundError() from exc


def job_events_latest(*, job: RunnerJob, limit: int) -> list[JobEvent]:
    """The latest ``limit`` events of ``job``, oldest first."""
    latest = JobEvent.objects.filter(job=job).order_by("-timestamp", "-id")[:limit]
    return list(reversed(latest))


def job_events(*, job: RunnerJob) -> QuerySet[JobEvent]:
    """Every event of ``job``, oldest first."""
    return JobEvent.objects.filter(job=job).order_by("timestamp", "id")
