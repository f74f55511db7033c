"""The dispatcher: the database decides which queued job may start.

``runnable_sql`` is the one predicate of "this queued job may start now"; the worker's claim
(``job_claim_next``) and the coordinator's claim (``locking.jobs_lock_claimable``) both select
with it, so they cannot disagree. A Celery message is only a doorbell: the worker that receives
one claims the best runnable Celery-run job, whichever create rang, and a bell that finds
nothing runnable does nothing (docs/decisions/0140-dispatcher.md).

The best job is chosen fairly between workspaces: the workspace with the fewest running jobs
first, then the head of its queue by priority, then age. Workspaces with queued jobs are found
by a loose index walk (a recursive CTE hopping from one ``workspace_id`` to the next over the
partial index of queued jobs), and each workspace's head is one index probe, so the cost grows
with the number of workspaces that wait, never with the size of a backlog.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models.expressions import RawSQL

from runner_jobs.models import JobStatus, RunnerJob

from .changes import queue_fields

CONCURRENCY_KEY_MAX_LENGTH = 128
CONCURRENCY_LIMIT_MAX = 1000
TTL_MAX_SECONDS = 30 * 24 * 3600
# A concurrency key's advisory lock: one 64-bit hash of the workspace and the key.
KEY_LOCK_SQL = "pg_advisory_xact_lock(hashtextextended({workspace}::text || '/' || {key}, 0))"
QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value


def _table() -> str:
    return f'"{RunnerJob._meta.db_table}"'


def runnable_sql(
    alias: str, *, types: Sequence[str], now: datetime | None, exclude: bool = False
) -> tuple[str, list[Any]]:
    """The predicate "``alias`` is a queued job of one of ``types`` (with ``exclude``: of none
    of them) that may start at ``now``" as SQL with its parameters: queued, due, not expired,
    and its concurrency key (if any) below its limit. Workers exclude the external types rather than
    list their own, so a job of a type no longer registered is started, and failed saying so.

    The key's count is read in the statement's snapshot, so two claimers may both see the last
    free slot: a claim of a keyed job takes the key's advisory lock and counts again in a later
    statement (``slot_held``). ``now`` None: the database's time at the statement's start, so
    every job its snapshot sees as created is also due (unless its run_at is ahead)."""
    terms = runnable_terms(alias, now=now)
    sql = f"{alias}.status = %s AND {'NOT ' if exclude else ''}({alias}.type = ANY(%s))"
    return " AND ".join([sql, *(term.sql for term in terms)]), [
        QUEUED,
        list(types),
        *(param for term in terms for param in term.params),
    ]


@dataclass(frozen=True)
class Term:
    """One condition a queued job must meet to start, as SQL over the job's alias; ``code`` is
    the reason "explain" gives when it is false (SPEC §9)."""

    code: str
    sql: str
    params: tuple[Any, ...] = ()


def runnable_terms(alias: str, *, now: datetime | None) -> list[Term]:
    """The conditions of ``runnable_sql`` beyond status and type, one by one: the dispatcher
    joins them with AND, and "explain" (``runner_jobs.explain``) evaluates each for one job, so
    the two never disagree."""
    due, at = ("%s", (now,)) if now is not None else ("statement_timestamp()", ())
    return [
        Term("not_due", f"({alias}.due_at IS NULL OR {alias}.due_at <= {due})", at),
        Term("expired", f"({alias}.expires_at IS NULL OR {alias}.expires_at > {due})", at),
        Term(
            "concurrency_limit",
            f"({alias}.concurrency_key IS NULL OR (SELECT count(*) FROM {_table()} k "
            f"WHERE k.workspace_id = {alias}.workspace_id AND k.status = '{RUNNING}' "
            f"AND k.concurrency_key = {alias}.concurrency_key) < {alias}.concurrency_limit)",
        ),
    ]


def _key_lock_sql(alias: str) -> str:
    """Take the transaction-scoped advisory lock of ``alias``'s concurrency key (when it has one):
    claimers of one key count its running jobs one after another."""
    key = KEY_LOCK_SQL.format(workspace=f"{alias}.workspace_id", key=f"{alias}.concurrency_key")
    return f"CASE WHEN {alias}.concurrency_key IS NOT NULL THEN {key} IS NOT NULL END"


def _key_running(job: RunnerJob) -> int:
    return RunnerJob.objects.filter(
        workspace_id=job.workspace_id, concurrency_key=job.concurrency_key, status=RUNNING
    ).count()


def slot_held(job: RunnerJob) -> bool:
    """After a worker claimed ``job`` under its key's advisory lock: whether its key's running
    jobs (it among them) are within its limit, counted in a snapshot taken after the lock, so
    every claim that held the lock before is seen. False: roll the claim back."""
    if job.concurrency_key is None:
        return True
    return _key_running(job) <= (job.concurrency_limit or 1)


def slot_take(job: RunnerJob) -> bool:
    """Before a coordinator's claim starts the locked ``job``: take its key's advisory lock (held
    until the transaction ends) and say whether a slot is free, counting the jobs this claim
    started already."""
    if job.concurrency_key is None:
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {KEY_LOCK_SQL.format(workspace='%s', key='%s')}",
            [job.workspace_id, job.concurrency_key],
        )
    return _key_running(job) < (job.concurrency_limit or 1)


@cache
def _pick_sql(runnable: str) -> str:
    """Common table expressions ending in ``pick(id)``: the best runnable job, locked
    (``FOR UPDATE SKIP LOCKED``), or no row. ``runnable`` is ``runnable_sql`` for alias ``j``
    and appears twice (rank without locks, then lock in rank order)."""
    table = _table()
    return (
        # Every workspace with a queued job, by a loose index walk (job_queued_workspace_idx).
        f"ws(workspace_id) AS ("
        f"(SELECT workspace_id FROM {table} WHERE status = '{QUEUED}' "
        f"ORDER BY workspace_id LIMIT 1) "
        f"UNION ALL SELECT (SELECT q.workspace_id FROM {table} q WHERE q.status = '{QUEUED}' "
        f"AND q.workspace_id > ws.workspace_id ORDER BY q.workspace_id LIMIT 1) "
        f"FROM ws WHERE ws.workspace_id IS NOT NULL), "
        # Each workspace's running count and the head of its runnable queue, without locks,
        # ranked: fewest running first, then priority, then age.
        f"ranked AS MATERIALIZED (SELECT ws.workspace_id FROM ws "
        f"CROSS JOIN LATERAL (SELECT count(*) AS n FROM {table} r "
        f"WHERE r.workspace_id = ws.workspace_id AND r.status = '{RUNNING}') run "
        f"CROSS JOIN LATERAL (SELECT j.priority, j.created_at FROM {table} j "
        f"WHERE j.workspace_id = ws.workspace_id AND {runnable} "
        f"ORDER BY j.priority DESC, j.created_at LIMIT 1) head "
        f"WHERE ws.workspace_id IS NOT NULL "
        f"ORDER BY run.n, head.priority DESC, head.created_at), "
        # In that order, the first workspace whose head (or next job) no other claimer holds.
        # The nested loop stops at the first row, so only the job claimed is locked, and only
        # its key's advisory lock taken.
        f"pick AS MATERIALIZED (SELECT c.id, {_key_lock_sql('c')} AS key_locked FROM ranked "
        f"CROSS JOIN LATERAL (SELECT j.id, j.workspace_id, j.concurrency_key FROM {table} j "
        f"WHERE j.workspace_id = ranked.workspace_id AND {runnable} "
        f"ORDER BY j.priority DESC, j.created_at LIMIT 1 FOR UPDATE OF j SKIP LOCKED) c "
        f"LIMIT 1)"
    )


def pick_ctes(*, exclude_types: Sequence[str], now: datetime) -> tuple[str, list[Any]]:
    """``WITH RECURSIVE`` expressions naming ``pick(id)``: the best runnable job of any type
    but ``exclude_types`` at ``now``, row-locked, skipping rows other claimers hold."""
    runnable, params = runnable_sql("j", types=exclude_types, now=now, exclude=True)
    return _pick_sql(runnable), [*params, *params]


def queued_fields(run_at: datetime | None, ttl_seconds: int | None = None) -> dict[str, Any]:
    """The fields of a new job entering ``queued``: due now, or at its ``run_at`` if later; with
    a ``ttl_seconds``, it expires that long after it became due (so a job to run tomorrow with
    an hour's ttl may start until an hour after its time)."""
    fields = queue_fields()
    if run_at is not None and run_at > fields["due_at"]:
        fields["due_at"] = run_at
    if ttl_seconds is not None:
        fields["expires_at"] = fields["due_at"] + timedelta(seconds=ttl_seconds)
    return fields


def limits_errors(ttl_seconds: int | None, timeout_seconds: int | None) -> dict[str, list[str]]:
    """Field errors of a new job's ttl and per-attempt timeout (the API's serializer checks the
    same ranges; this guards every other caller)."""
    errors: dict[str, list[str]] = {}
    if ttl_seconds is not None and not 1 <= ttl_seconds <= TTL_MAX_SECONDS:
        errors["ttl_seconds"] = [f"Must be between 1 and {TTL_MAX_SECONDS}."]
    timeout_max = settings.RUNNER_JOB_MAX_TIMEOUT_SECONDS
    if timeout_seconds is not None and not 1 <= timeout_seconds <= timeout_max:
        errors["timeout_seconds"] = [f"Must be between 1 and {timeout_max}."]
    return errors


def spec_errors(
    key: str | None, limit: int | None, unique_key: str | None = None
) -> dict[str, list[str]]:
    """Field errors of a new job's concurrency key and limit and its unique key (the API's
    serializer checks the same shapes; this guards every other caller)."""
    errors: dict[str, list[str]] = {}
    for name, value in (("concurrency_key", key), ("unique_key", unique_key)):
        if value is not None and not 0 < len(value) <= CONCURRENCY_KEY_MAX_LENGTH:
            errors[name] = [f"Must be 1-{CONCURRENCY_KEY_MAX_LENGTH} characters."]
    if limit is not None:
        if key is None:
            errors["concurrency_limit"] = ["Needs a concurrency_key."]
        elif not 1 <= limit <= CONCURRENCY_LIMIT_MAX:
            errors["concurrency_limit"] = [f"Must be between 1 and {CONCURRENCY_LIMIT_MAX}."]
    return errors


def concurrency_limit(key: str | None, limit: int | None) -> int | None:
    """The limit stored with a job: the one stated, 1 for a key without one, none without key."""
    if key is None:
        return None
    return limit or 1


def runnable_exists(*, exclude_types: Sequence[str]) -> bool:
    """Whether a job of any type but ``exclude_types`` may start now, in a fresh snapshot and
    whoever holds its row (a claim that found nothing asks this before giving up). Due by the
    database's clock: a job committed after the claim read the time is not missed."""
    runnable, params = runnable_sql("j", types=exclude_types, now=None, exclude=True)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {_table()} j WHERE {runnable})", params)
        return bool(cursor.fetchone()[0])


def runnable_ids(*, types: Sequence[str], now: datetime) -> RawSQL:
    """The ids of the runnable jobs of ``types`` at ``now``, for a queryset's ``pk__in``."""
    runnable, params = runnable_sql("j", types=types, now=now)
    return RawSQL(f"SELECT j.id FROM {_table()} j WHERE {runnable}", params)
