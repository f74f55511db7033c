""" "Why isn't it running?" (SPEC §9): the reasons a job waits, read from the dispatcher's own
rule. Each condition of ``services.flow.runnable_terms`` — the very SQL the worker's and the
coordinator's claims join with AND — is evaluated for this one job in one statement, so a
reason given here is exactly a condition the claim found false, never a guess beside it."""

from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Max

from runner_jobs.models import (
    TERMINAL_STATUSES,
    JobStatus,
    RunnerJob,
    Worker,
    WorkerKind,
)
from runner_jobs.registry import external_type_names, job_type_get
from runner_jobs.services import flow
from runner_jobs.workers import alive_since

Reason = dict[str, Any]


@dataclass(frozen=True)
class Explanation:
    job: RunnerJob
    runnable: bool
    reasons: list[Reason] = field(default_factory=list)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _running_ids(job: RunnerJob, **same: Any) -> list[str]:
    running = RunnerJob.objects.filter(
        workspace_id=job.workspace_id, status=JobStatus.RUNNING, **same
    ).order_by("started_at")
    return [str(pk) for pk in running.values_list("pk", flat=True)]


def _term_reason(job: RunnerJob, code: str) -> Reason:
    if code == "not_due":
        retry = job.run_at is None or job.due_at != job.run_at
        detail = "Waiting out a retry delay." if retry else "Its run_at has not come."
        return {
            "code": code,
            "detail": detail,
            "due_at": _iso(job.due_at),
            "run_at": _iso(job.run_at),
        }
    if code == "expired":
        return {
            "code": code,
            "detail": "Not started by its expires_at: it will not start; the sweeper ends it.",
            "expires_at": _iso(job.expires_at),
        }
    if code == "concurrency_limit":
        return {
            "code": code,
            "detail": f"Its concurrency key has {job.concurrency_limit} slot(s), all taken.",
            "key": job.concurrency_key,
            "limit": job.concurrency_limit,
            "running": _running_ids(job, concurrency_key=job.concurrency_key),
        }
    if code == "type_paused":
        return {"code": code, "detail": f"{job.type} is paused in this workspace."}
    if code == "type_max_running":
        cap = flow.type_cap(job)
        return {
            "code": code,
            "detail": f"At most {cap} {job.type} job(s) run at once in this workspace; all taken.",
            "max_running": cap,
            "running": _running_ids(job, type=job.type),
        }
    return {"code": code, "detail": "A condition of the dispatcher is not met."}


# "ahead" counts at most this many: beyond it the figure tells an operator nothing more, and a
# full count over a backlog of a million jobs would cost seconds (a bounded one costs < 5 ms).
AHEAD_COUNT_MAX = 1000


def _ahead(job: RunnerJob) -> int:
    """Runnable jobs of the job's workspace the dispatcher starts before it (priority, then
    age), counted up to ``AHEAD_COUNT_MAX``."""
    runnable, params = flow.runnable_sql("j", types=external_type_names(), now=None, exclude=True)
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT count(*) FROM (SELECT 1 FROM "{RunnerJob._meta.db_table}" j WHERE {runnable} '
            "AND j.workspace_id = %s AND (j.priority > %s OR (j.priority = %s "
            "AND j.created_at < %s)) LIMIT %s) ahead",
            [
                *params,
                job.workspace_id,
                job.priority,
                job.priority,
                job.created_at,
                AHEAD_COUNT_MAX,
            ],
        )
        return int(cursor.fetchone()[0])


def _waiting_reason(job: RunnerJob) -> Reason:
    """What a job that meets every condition waits for: a coordinator's claim, a live worker,
    or its turn."""
    job_type = job_type_get(job.type)
    if job_type is not None and job_type.external:
        last = Worker.objects.filter(kind=WorkerKind.COORDINATOR).aggregate(at=Max("last_seen_at"))
        return {
            "code": "waiting_for_coordinator",
            "detail": f"{job.type} is run by a coordinator; none has claimed it yet.",
            "last_claim_at": _iso(last["at"]),
        }
    alive = Worker.objects.filter(
        kind=WorkerKind.CELERY, stopped_at__isnull=True, last_seen_at__gte=alive_since()
    )
    if not alive.exists():
        return {"code": "no_workers", "detail": "No Celery worker is alive to start it."}
    ahead = _ahead(job)
    count = f"{ahead} or more" if ahead >= AHEAD_COUNT_MAX else str(ahead)
    return {
        "code": "waiting_for_worker",
        "detail": f"Waiting for a free worker slot; {count} job(s) of its workspace go first.",
        "ahead": ahead,
    }


def job_explain(job: RunnerJob) -> Explanation:
    """Whether ``job`` may start now and, if it has not, why."""
    if job.status in TERMINAL_STATUSES:
        reason = {"code": "terminal", "detail": f"The job has ended: {job.status}."}
        return Explanation(job, runnable=False, reasons=[reason])
    if job.status == JobStatus.RUNNING:
        return Explanation(job, runnable=False)
    failed = flow.failed_terms(job.pk)
    reasons = [_term_reason(job, code) for code in failed]
    if not failed:
        reasons.append(_waiting_reason(job))
    return Explanation(job, runnable=job.status == JobStatus.QUEUED and not failed, reasons=reasons)
