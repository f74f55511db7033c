"""Reads of workers: who is alive, and what each is running (SPEC §9 "Workers")."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from runner_jobs.models import JobStatus, RunnerJob, Worker


def alive_since() -> datetime:
    """A worker seen after this (and not stopped) is alive: a stopped one is not alive within a
    lease, the time after which its jobs are recovered too."""
    return timezone.now() - timedelta(seconds=settings.RUNNER_JOB_LEASE_SECONDS)


ALIVE = Q(stopped_at__isnull=True)


@dataclass(frozen=True)
class WorkerState:
    worker: Worker
    alive: bool
    running: list[str]


def workers_list() -> list[WorkerState]:
    """Every known worker with its liveness and its running jobs' ids (two queries)."""
    workers = list(Worker.objects.order_by("kind", "name"))
    since = alive_since()
    running: dict[str, list[str]] = {}
    jobs = (
        RunnerJob.objects.filter(
            status=JobStatus.RUNNING, lease_owner__in=[w.name for w in workers]
        )
        .order_by("started_at")
        .values_list("lease_owner", "id")
    )
    for owner, job_id in jobs:
        running.setdefault(owner, []).append(str(job_id))
    return [
        WorkerState(
            worker=w,
            alive=w.stopped_at is None and w.last_seen_at >= since,
            running=running.get(w.name, []),
        )
        for w in workers
    ]


def worker_counts() -> dict[tuple[str, bool], int]:
    """Workers by (kind, alive), for the metric."""
    rows = (
        Worker.objects.order_by()
        .values_list("kind")
        .annotate(
            alive=Count("pk", filter=ALIVE & Q(last_seen_at__gte=alive_since())),
            total=Count("pk"),
        )
    )
    counts: dict[tuple[str, bool], int] = {}
    for kind, alive, total in rows:
        counts[(kind, True)] = alive
        counts[(kind, False)] = total - alive
    return counts
