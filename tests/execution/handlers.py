"""Handlers for tests only, registered per test through ``RUNNER_JOB_TYPES``."""

import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from runner_jobs.execution import JobContext
from runner_jobs.models import RunnerJob

# What the ``quiet`` handler saw, for the test to read (it runs in the test's process).
observed: dict[str, Any] = {}


def times_out(job: RunnerJob, ctx: JobContext) -> None:
    raise SoftTimeLimitExceeded()


def fails_in_a_step(job: RunnerJob, ctx: JobContext) -> None:
    with ctx.step("prepare", "setup"):
        raise ValueError("broken input")


def notes(job: RunnerJob, ctx: JobContext) -> str:
    ctx.event("note.added", {"n": 1})
    ctx.progress(40, message="noted")
    return "noted"


def quiet(job: RunnerJob, ctx: JobContext) -> None:
    """Reports nothing for ``payload["seconds"]``: only the heartbeat keeps its lease."""
    time.sleep(job.payload["seconds"])
    observed["lease_expires_at"] = RunnerJob.objects.get(pk=job.pk).lease_expires_at
    observed["cancelled"] = ctx.cancelled


def times_out_in_a_step(job: RunnerJob, ctx: JobContext) -> None:
    with ctx.step("long", "execution"):
        raise SoftTimeLimitExceeded()


def busy_querying(job: RunnerJob, ctx: JobContext) -> None:
    """Queries without pause, so a time limit almost surely interrupts a query."""
    with ctx.step("query", "execution"):
        while True:
            RunnerJob.objects.filter(pk=job.pk).exists()


def unstorable(job: RunnerJob, ctx: JobContext) -> dict[str, str]:
    """Returns a result PostgreSQL cannot store (a NUL in a jsonb string)."""
    return {"text": "a\x00b"}
