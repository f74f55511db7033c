"""Reads of jobs and their events. Every queryset an API user sees starts from ``jobs_for_user``,
so another workspace's job is simply not there (a 404, never a 403)."""

import uuid
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet

from runner_jobs.errors import JobNotFoundError
from runner_jobs.models import (
    TERMINAL_STATUSES,
    JobEvent,
    JobStatus,
    JobTypePolicy,
    Operation,
    RunnerJob,
)
from runner_jobs.registry import job_types
from workspaces.models import Workspace
from workspaces.selectors import workspaces_for_user


def jobs_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[RunnerJob]:
    """The jobs of every workspace ``user`` is a member of, newest first."""
    return (
        RunnerJob.objects.filter(workspace__in=workspaces_for_user(user))
        .select_related("workspace", "created_by")
        .order_by("-created_at", "-id")
    )


def operations_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Operation]:
    """The bulk operations of every workspace ``user`` is a member of, newest first."""
    return (
        Operation.objects.filter(workspace__in=workspaces_for_user(user))
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


@dataclass(frozen=True)
class EventBatch:
    events: list[JobEvent]
    # The job had ended before ``events`` were read, so its terminal event is in this batch or
    # an earlier one: a reader that has nothing newer left may stop.
    job_ended: bool


def job_events_after(*, job_id: uuid.UUID | str, after: int, limit: int) -> EventBatch:
    """Up to ``limit`` events of ``job_id`` with an id greater than ``after``, oldest first.

    "id > last seen" is a safe cursor only because one job's event ids become visible in id
    order: every writer takes the job's row lock (the versioned UPDATE in
    ``runner_jobs.services.locking.job_write``, or ``select_for_update``) *before* inserting its
    event and holds it until commit, so a second writer of the same job draws its id from the
    sequence only after the first one committed. Without that lock, ids 10 and 11 could commit
    as 11 then 10, and a reader that saw 11 would skip 10 forever (docs/decisions/0002).
    Events of different jobs have no such order; this never mixes jobs.
    """
    # Status first, events second: if the job had ended at the first read, the second one (a
    # later snapshot) sees its terminal event.
    status = RunnerJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    events = list(
        JobEvent.objects.filter(job__pk=job_id, id__gt=after).order_by("timestamp", "id")[:limit]
    )
    return EventBatch(events=events, job_ended=status in TERMINAL_STATUSES)


@dataclass(frozen=True)
class JobTypeState:
    """A registered job type as one workspace runs it: its policy there and its live jobs."""

    name: str
    external: bool
    paused: bool
    max_running: int | None
    queued: int
    running: int


def job_type_states(*, workspace: Workspace, name: str | None = None) -> list[JobTypeState]:
    """Every registered type (or only ``name``) in ``workspace``, by name: its policy (none:
    not paused, no cap) and its queued and running jobs there. Two queries; the counts read the
    workspace's live jobs (partial indexes of queued and of running jobs)."""
    types = sorted(job_types().values(), key=lambda t: t.name)
    if name is not None:
        types = [t for t in types if t.name == name]
    policies = {
        policy.type: policy
        for policy in JobTypePolicy.objects.filter(
            workspace=workspace, type__in=[t.name for t in types]
        )
    }
    counts: dict[tuple[str, str], int] = {
        (type_, status): n
        for type_, status, n in RunnerJob.objects.filter(
            workspace=workspace,
            type__in=[t.name for t in types],
            status__in=(JobStatus.QUEUED, JobStatus.RUNNING),
        )
        .order_by()
        .values_list("type", "status")
        .annotate(n=Count("pk"))
    }
    states = []
    for job_type in types:
        policy = policies.get(job_type.name)
        states.append(
            JobTypeState(
                name=job_type.name,
                external=job_type.external,
                paused=policy.paused if policy else False,
                max_running=policy.max_running if policy else None,
                queued=counts.get((job_type.name, JobStatus.QUEUED), 0),
                running=counts.get((job_type.name, JobStatus.RUNNING), 0),
            )
        )
    return states
