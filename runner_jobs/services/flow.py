"""The dispatcher: the database decides which queued job may start.

``runnable_sql`` is the one predicate of "this queued job may start now"; the worker's claim
(``job_claim_next``) and the coordinator's claim (``locking.jobs_lock_claimable``) both select
with it, so they cannot disagree. A Celery message is only a doorbell: the worker that receives
one claims the best runnable Celery-run job, whichever create rang, and a bell that finds
nothing runnable does nothing (docs/decisions/0140-dispatcher.md).

The best job is chosen fairly between workspaces: the workspace with the fewest running jobs
first, then the head of its queue by priority, then age. The (workspace, type) pairs with queued
jobs are found by a loose index walk (a recursive CTE hopping from one pair to the next over the
partial index of queued jobs); pairs the claimer does not run or a type policy holds back are
left out before any of their jobs is read, and each other pair's head is one index probe, so the
cost grows with the number of pairs that wait, never with the size of a backlog
(docs/decisions/0141-type-policies.md).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.expressions import RawSQL

from runner_jobs.models import JobStatus, JobTypePolicy, RunnerJob

from .changes import queue_fields

CONCURRENCY_KEY_MAX_LENGTH = 128
CONCURRENCY_LIMIT_MAX = 1000
TTL_MAX_SECONDS = 30 * 24 * 3600
# A concurrency key's advisory lock: one 64-bit hash of the workspace and the key.
KEY_LOCK_SQL = "pg_advisory_xact_lock(hashtextextended({workspace}::text || '/' || {key}, 0))"
# A capped type's advisory lock (its workspace's ``max_running``): the two-key form, whose key
# space does not overlap the one-key form's, so a type's lock is never a concurrency key's.
TYPE_LOCK_SPACE = 0x524A5450  # "RJTP"
TYPE_LOCK_SQL = (
    f"pg_advisory_xact_lock({TYPE_LOCK_SPACE}, hashtext({{workspace}}::text || '/' || {{type}}))"
)
QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value


def _table() -> str:
    return f'"{RunnerJob._meta.db_table}"'


def _policies() -> str:
    return f'"{JobTypePolicy._meta.db_table}"'


def type_cap_sql(alias: str) -> str:
    """``alias``'s type's ``max_running`` in its workspace, or NULL (no cap)."""
    return (
        f"(SELECT p.max_running FROM {_policies()} p "
        f"WHERE p.workspace_id = {alias}.workspace_id AND p.type = {alias}.type)"
    )


def type_capped_sql(alias: str) -> str:
    """Whether ``alias``'s type has a ``max_running`` in its workspace (a job of it leaving
    ``running`` frees a slot someone may wait for)."""
    return f"({type_cap_sql(alias)} IS NOT NULL)"


def type_cap(job: RunnerJob) -> int | None:
    """``type_cap_sql`` for a job read without it (one query)."""
    return (
        JobTypePolicy.objects.filter(workspace_id=job.workspace_id, type=job.type)
        .values_list("max_running", flat=True)
        .first()
    )


def type_capped(job: RunnerJob) -> bool:
    """``type_capped_sql`` for a job read without it (one query)."""
    return type_cap(job) is not None


def with_type_capped(queryset: "QuerySet[RunnerJob]") -> "QuerySet[RunnerJob]":
    """``queryset`` with ``type_capped`` (``type_capped_sql``) on each job, read with the row."""
    capped = JobTypePolicy.objects.filter(
        workspace_id=OuterRef("workspace_id"), type=OuterRef("type"), max_running__isnull=False
    )
    return queryset.annotate(type_capped=Exists(capped))


def runnable_sql(
    alias: str, *, types: Sequence[str], now: datetime | None, exclude: bool = False
) -> tuple[str, list[Any]]:
    """The predicate "``alias`` is a queued job of one of ``types`` (with ``exclude``: of none
    of them) that may start at ``now``" as SQL with its parameters: queued, due, not expired,
    its concurrency key (if any) below its limit, and its type neither paused in its workspace
    nor at its ``max_running`` there. Workers exclude the external types rather than list their
    own, so a job of a type no longer registered is started, and failed saying so.

    The key's and the type's counts are read in the statement's snapshot, so two claimers may
    both see the last free slot: a claim of a keyed job (or of a capped type) takes the key's
    (the type's) advisory lock and counts again in a later statement (``slot_held``). ``now``
    None: the database's time at the statement's start, so
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
        *policy_terms(alias),
    ]


def policy_terms(alias: str) -> list[Term]:
    """``alias``'s type is not paused in its workspace, and, when capped there, its running jobs
    of that type are below the cap. No policy row: both hold (one probe each of the policies'
    unique index; the running jobs are counted only for a capped type)."""
    policy = (
        f"SELECT 1 FROM {_policies()} p "
        f"WHERE p.workspace_id = {alias}.workspace_id AND p.type = {alias}.type"
    )
    return [
        Term("type_paused", f"NOT EXISTS ({policy} AND p.paused)"),
        Term(
            "type_max_running",
            f"NOT EXISTS ({policy} AND p.max_running <= (SELECT count(*) FROM {_table()} t "
            f"WHERE t.workspace_id = {alias}.workspace_id AND t.type = {alias}.type "
            f"AND t.status = '{RUNNING}'))",
        ),
    ]


def _policy_allows_sql(alias: str) -> str:
    """Both ``policy_terms`` (a (workspace, type) pair the policy lets start jobs)."""
    return " AND ".join(term.sql for term in policy_terms(alias))


def _locks_sql(alias: str) -> str:
    """Take the transaction-scoped advisory locks of ``alias``'s concurrency key and of its
    capped type (``alias`` has ``type_cap``), those it has, key first: claimers of one key (one
    capped type) count its running jobs one after another. Every claimer takes keys before
    types, so none waits for a key while holding a type's lock (no deadlock)."""
    key = KEY_LOCK_SQL.format(workspace=f"{alias}.workspace_id", key=f"{alias}.concurrency_key")
    type_ = TYPE_LOCK_SQL.format(workspace=f"{alias}.workspace_id", type=f"{alias}.type")
    return (
        f"CASE WHEN {alias}.concurrency_key IS NOT NULL THEN {key} IS NOT NULL END AS key_locked, "
        f"CASE WHEN {alias}.type_cap IS NOT NULL THEN {type_} IS NOT NULL END AS type_locked"
    )


def _within_limits(job: RunnerJob, *, type_cap: int | None, starting: int) -> bool:
    """Whether ``job``'s key and capped type stay within their limits with ``starting`` more
    running jobs than the database shows (0: ``job`` runs already), counted in a new snapshot."""
    running = RunnerJob.objects.filter(workspace_id=job.workspace_id, status=RUNNING)
    if job.concurrency_key is not None:
        keyed = running.filter(concurrency_key=job.concurrency_key).count()
        if keyed + starting > (job.concurrency_limit or 1):
            return False
    return type_cap is None or running.filter(type=job.type).count() + starting <= type_cap


def slot_held(job: RunnerJob, *, type_cap: int | None) -> bool:
    """After a worker claimed ``job`` under its key's and type's advisory locks: whether its
    key's running jobs (it among them) are within its limit and its type's within ``type_cap``,
    counted in a snapshot taken after the locks, so every claim that held them before is seen.
    False: roll the claim back. No query for a job with neither."""
    return _within_limits(job, type_cap=type_cap, starting=0)


def slots_lock(jobs: Sequence[tuple[RunnerJob, int | None]]) -> None:
    """Before a coordinator's claim starts the locked ``jobs`` (each with its type's cap): take
    the advisory locks of their keys and capped types (held until the transaction ends) in one
    statement, keys then types, each in sorted order, so claimers of several jobs cannot
    deadlock."""
    keys = sorted(
        {(job.workspace_id, job.concurrency_key) for job, _ in jobs if job.concurrency_key}
    )
    types = sorted({(job.workspace_id, job.type) for job, cap in jobs if cap is not None})
    locks = [KEY_LOCK_SQL.format(workspace="%s", key="%s")] * len(keys)
    locks += [TYPE_LOCK_SQL.format(workspace="%s", type="%s")] * len(types)
    if locks:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {', '.join(locks)}", [v for pair in keys + types for v in pair])


def slot_free(job: RunnerJob, *, type_cap: int | None) -> bool:
    """Under the locks ``slots_lock`` took: whether ``job`` may start, counting the jobs this
    claim started already. No query for a job with neither a key nor a capped type."""
    return _within_limits(job, type_cap=type_cap, starting=1)


# A pair's jobs by priority, then age. The workspace and type lead (fixed by the pair, so the
# order is the same) and the pair is a range of row values, not two equalities: only
# job_queued_workspace_type_idx serves both, so the planner never walks the index by type alone
# (job_claimable_idx) through other workspaces' jobs of the type, whatever it estimates.
_PAIR_ORDER = "ORDER BY j.workspace_id, j.type, j.priority DESC, j.created_at"


def _in_pair(alias: str) -> str:
    pair = f"({alias}.workspace_id, {alias}.type)"
    return f"(j.workspace_id, j.type) >= {pair} AND (j.workspace_id, j.type) <= {pair}"


@cache
def _pick_sql(runnable: str, pair_allowed: str) -> str:
    """Common table expressions ending in ``pick(id, type_cap)``: the best runnable job, locked
    (``FOR UPDATE SKIP LOCKED``), with its type's cap in its workspace, or no row.
    ``runnable`` is ``runnable_sql`` for alias ``j`` and appears twice (rank without locks,
    then lock in rank order); ``pair_allowed`` (alias ``wt``) leaves out, before any of their
    jobs is read, the (workspace, type) pairs whose type the claimer does not run or the
    workspace's policy holds back (paused, or at its ``max_running``): a held-back backlog
    costs the claim nothing, however long (decision 0141)."""
    table = _table()
    return (
        # Every (workspace, type) with a queued job, by a loose index walk
        # (job_queued_workspace_type_idx): one hop per pair, never per job.
        f"wt(workspace_id, type) AS ("
        f"(SELECT workspace_id, type FROM {table} WHERE status = '{QUEUED}' "
        f"ORDER BY workspace_id, type LIMIT 1) "
        f"UNION ALL SELECT n.workspace_id, n.type FROM wt CROSS JOIN LATERAL ("
        f"SELECT q.workspace_id, q.type FROM {table} q WHERE q.status = '{QUEUED}' "
        f"AND (q.workspace_id, q.type) > (wt.workspace_id, wt.type) "
        f"ORDER BY q.workspace_id, q.type LIMIT 1) n), "
        # Each allowed pair's workspace's running count and the head of the pair's runnable
        # queue, without locks, ranked: the workspace with fewest running first, then priority,
        # then age (so a workspace's pairs come in the order of its best jobs).
        f"ranked AS MATERIALIZED (SELECT wt.workspace_id, wt.type FROM wt "
        f"CROSS JOIN LATERAL (SELECT count(*) AS n FROM {table} r "
        f"WHERE r.workspace_id = wt.workspace_id AND r.status = '{RUNNING}') run "
        f"CROSS JOIN LATERAL (SELECT j.priority, j.created_at FROM {table} j "
        f"WHERE {_in_pair('wt')} AND {runnable} {_PAIR_ORDER} LIMIT 1) head "
        f"WHERE {pair_allowed} "
        f"ORDER BY run.n, head.priority DESC, head.created_at), "
        # In that order, the first pair whose head (or next job) no other claimer holds. The
        # nested loop stops at the first row, so only the job claimed is locked, and only its
        # key's and capped type's advisory locks taken.
        f"pick AS MATERIALIZED (SELECT c.id, c.type_cap, {_locks_sql('c')} FROM ranked "
        f"CROSS JOIN LATERAL (SELECT j.id, j.workspace_id, j.concurrency_key, j.type, "
        f"{type_cap_sql('j')} AS type_cap FROM {table} j "
        f"WHERE {_in_pair('ranked')} AND {runnable} {_PAIR_ORDER} LIMIT 1 "
        f"FOR UPDATE OF j SKIP LOCKED) c "
        f"LIMIT 1)"
    )


def pick_ctes(*, exclude_types: Sequence[str], now: datetime) -> tuple[str, list[Any]]:
    """``WITH RECURSIVE`` expressions naming ``pick(id, type_cap)``: the best runnable job of
    any type but ``exclude_types`` at ``now``, row-locked, skipping rows other claimers hold."""
    runnable, params = runnable_sql("j", types=exclude_types, now=now, exclude=True)
    pair_allowed = f"NOT (wt.type = ANY(%s)) AND {_policy_allows_sql('wt')}"
    return _pick_sql(runnable, pair_allowed), [*params, list(exclude_types), *params]


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


def failed_terms(job_id: Any) -> list[str]:
    """The codes of the ``runnable_terms`` the job fails now, in the rule's order, evaluated
    for that one job in one statement by the database's clock (explain, and a coordinator's
    own start of a job)."""
    terms = runnable_terms("j", now=None)
    columns = ", ".join(f"NOT ({term.sql})" for term in terms)
    params = [param for term in terms for param in term.params]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {_table()} j WHERE j.id = %s", [*params, job_id])
        row = cursor.fetchone()
    return [term.code for term, failed in zip(terms, row or (), strict=False) if failed]


def start_allowed(job: RunnerJob) -> list[str]:
    """For a queued ``job`` whose row this transaction holds, about to be started other than by
    a claim (a coordinator's ``status: running``): take its key's and capped type's advisory
    locks, as a claim does, then the codes of the dispatcher's conditions it fails (none: it
    may start). The counts are read after the locks, so two such starts racing for a key's
    last slot are decided one after the other."""
    slots_lock([(job, type_cap(job))])
    return failed_terms(job.pk)


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
