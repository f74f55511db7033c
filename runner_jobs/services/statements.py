"""The hot path as single SQL statements: a job change and its event in one round trip.

Each statement is a data-modifying CTE: the job's INSERT or conditional UPDATE, then the INSERT
of its event(s) selecting from the changed row. The UPDATE takes the job's row lock before the
event's id is drawn from the sequence (the event INSERT reads the UPDATE's output), so the rule
of docs/decisions/0002 holds: one job's event ids become visible in id order. A conditional
UPDATE decides, fences and locks in one go: zero rows means "refused", and only then is the job
read once more to say why (docs/decisions/0100-fast-path.md).

Run in autocommit, a statement is its own transaction (no BEGIN/COMMIT round trips); inside a
caller's ``transaction.atomic()`` it joins that transaction.
"""

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Field

from config.rows import model_from_row
from runner_jobs.models import JobEvent, RunnerJob
from workspaces.models import Workspace

EventSpec = tuple[str, str, dict[str, Any]]  # (type, actor, payload)


@dataclass(frozen=True)
class Written:
    """A job as a statement left it, with the events that statement wrote (and the values of
    the statement's ``select_extra`` expressions, in order)."""

    job: RunnerJob
    events: list[JobEvent]
    extra: tuple[Any, ...] = ()


def _columns() -> "list[Field[Any, Any]]":
    return list(RunnerJob._meta.concrete_fields)


_EVENTS_JSON = (
    "(SELECT json_agg(json_build_object('id', ev.id, 'step_id', ev.step_id, 'type', ev.type, "
    "'actor', ev.actor, 'payload', ev.payload, 'timestamp', ev.timestamp) ORDER BY ev.id) "
    "FROM ev)"
)


@cache
def _job_select(extra: tuple[str, ...] = ()) -> str:
    """The changed row's columns, then its workspace's slug and its creator's username, so the
    API's representation needs no further query; its events; then the ``extra`` expressions."""
    cols = ", ".join(f'job."{field.column}"' for field in _columns())
    user_table = User._meta.db_table
    workspace_table = Workspace._meta.db_table
    more = "".join(f", {expression}" for expression in extra)
    return (
        f"{cols}, ws.slug, ws.name, u.username, {_EVENTS_JSON}{more} FROM job "
        f'JOIN "{workspace_table}" ws ON ws.id = job.workspace_id '
        f'LEFT JOIN "{user_table}" u ON u.id = job.created_by_id'
    )


def _event_insert(job_source: str, values: str) -> str:
    """INSERT the events listed in ``values`` (rows of ``(n, type, actor, payload)``, which may
    read the job row as ``job``) for each job row of ``job_source``, in job id then ``n`` order
    so their ids follow it.

    ``clock_timestamp()``, not ``STATEMENT_TIMESTAMP()``: the statement may have started before
    it waited for the job's row lock, and the event's time must be taken after the lock, like
    its id, so one job's (timestamp, id) order and id order agree."""
    table = JobEvent._meta.db_table
    return (
        f'INSERT INTO "{table}" (job_id, step_id, type, actor, payload, "timestamp") '
        f"SELECT job.id, e.step_id, e.type, e.actor, e.payload, clock_timestamp() "
        f"FROM {job_source} AS job, LATERAL ({values}) AS e(n, step_id, type, actor, payload) "
        f"ORDER BY job.id, e.n RETURNING id, job_id, step_id, type, actor, payload, timestamp"
    )


def _event_values(count: int, *, payload_expr: str = "%s::jsonb") -> str:
    rows = ", ".join(f"({n}, %s::bigint, %s, %s, {payload_expr})" for n in range(count))
    return f"VALUES {rows}"


def _hydrate(row: Sequence[Any], events_json: Any, extra: Sequence[Any] = ()) -> Written:
    fields = _columns()
    job = model_from_row(RunnerJob, row[: len(fields)])
    slug, name, username = row[len(fields) : len(fields) + 3]
    job.workspace = Workspace(id=job.workspace_id, slug=slug, name=name)
    if job.created_by_id is not None:
        job.created_by = User(id=job.created_by_id, username=username)
    events = [
        JobEvent(
            id=item["id"],
            job_id=job.pk,
            step_id=item["step_id"],
            type=item["type"],
            actor=item["actor"],
            payload=item["payload"],
            timestamp=datetime.fromisoformat(item["timestamp"]),
        )
        for item in _json_value(events_json)
    ]
    return Written(job=job, events=events, extra=tuple(extra))


@cache
def _insert_sql(event_count: int) -> str:
    fields = _columns()
    names = ", ".join(f'"{f.column}"' for f in fields)
    placeholders = ", ".join("%s" for _ in fields)
    return (
        f'WITH job AS (INSERT INTO "{RunnerJob._meta.db_table}" ({names}) '
        f"VALUES ({placeholders}) RETURNING *), "
        f"ev AS ({_event_insert('job', _event_values(event_count))}) "
        f"SELECT {_job_select()}"
    )


def _event_params(events: Sequence[EventSpec], step_id: int | None = None) -> list[Any]:
    params: list[Any] = []
    for type, actor, payload in events:
        params += [step_id, type, actor, json.dumps(payload)]
    return params


def job_insert(job: RunnerJob, events: Sequence[EventSpec]) -> Written:
    """INSERT ``job`` (an unsaved instance with every field set) and ``events`` in one
    statement; ``job.version`` must already count them."""
    params = [
        field.get_db_prep_save(field.pre_save(job, add=True), connection) for field in _columns()
    ]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(len(events)), [*params, *_event_params(events)])
        row = cursor.fetchone()
    assert row is not None
    return _hydrate(row[:-1], row[-1])


@dataclass(frozen=True)
class Assignment:
    """``column = <sql>`` in a conditional UPDATE, with its parameters."""

    column: str
    sql: str
    params: tuple[Any, ...] = ()


def job_update_where(
    *,
    job_id: uuid.UUID | str | None,
    statuses: Sequence[str],
    lease_token: uuid.UUID | str | None,
    assignments: Sequence[Assignment],
    event_type: str,
    actor: str,
    payload: dict[str, Any],
    payload_from_row: dict[str, str] | None = None,
    step_id: int | None = None,
    extra_where: str = "",
    extra_params: Sequence[Any] = (),
    ctes: str = "",
    cte_params: Sequence[Any] = (),
    select_extra: tuple[str, ...] = (),
) -> Written | None:
    """One conditional write: ``UPDATE ... SET <assignments>, version = version + 1 WHERE id
    AND status IN statuses [AND lease_token]`` and its event, in one statement. None when no
    row matched (the caller reads the job once to say why). ``payload_from_row`` adds the
    changed row's columns to the event payload (e.g. the stored progress).

    Without a ``job_id`` the row is the one ``extra_where`` selects, usually from ``ctes``
    (``WITH RECURSIVE`` common table expressions written before the UPDATE's own): the
    dispatcher's claim of the best runnable job (``services/flow.py``). ``select_extra``: SQL
    expressions (over ``job`` and the CTEs) whose values come back in ``Written.extra``."""
    where = "status = ANY(%s)"
    where_params: list[Any] = [list(statuses)]
    if job_id is not None:
        try:
            job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
        except ValueError:
            return None  # no such job; the caller's read says so
        where, where_params = f"id = %s AND {where}", [job_uuid, *where_params]
    sets = ", ".join(f'"{a.column}" = {a.sql}' for a in assignments)
    set_params = [p for a in assignments for p in a.params]
    if lease_token is not None:
        where += " AND lease_token = %s"
        where_params.append(str(lease_token))
    if extra_where:
        where += f" AND {extra_where}"
        where_params += list(extra_params)
    payload_expr = "%s::jsonb"
    if payload_from_row:
        pairs = ", ".join(f"'{key}', job.\"{column}\"" for key, column in payload_from_row.items())
        payload_expr = f"(%s::jsonb || jsonb_build_object({pairs}))"
    values = (
        "SELECT 0 AS n, %s::bigint AS step_id, %s AS type, %s AS actor, "
        f"{payload_expr} AS payload FROM job"
    )
    sql = (f"WITH RECURSIVE {ctes}, " if ctes else "WITH ") + (
        f'job AS (UPDATE "{RunnerJob._meta.db_table}" SET {sets}, version = version + 1 '
        f"WHERE {where} RETURNING *), "
        f"ev AS ({_event_insert('job', values)}) "
        f"SELECT {_job_select(select_extra)}"
    )
    params = [
        *cte_params,
        *set_params,
        *where_params,
        *_event_params([(event_type, actor, payload)], step_id),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    end = len(row) - len(select_extra)
    return _hydrate(row[: end - 1], row[end - 1], row[end:])


def _json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def jobs_update_each(
    *,
    jobs: Sequence[RunnerJob],
    assignments: Sequence[Assignment],
    event_type: str,
    actor: str,
    payloads: Sequence[dict[str, Any]],
) -> list[JobEvent]:
    """``job_write`` for a batch, in one statement: for each of ``jobs`` (rows the caller holds
    locked), ``UPDATE ... SET <assignments>, version = version + 1 WHERE id = <its id> AND
    version = <its version as read>``, and its one event with its own payload (``payloads``, in
    the order of ``jobs``). The events written, in job id order; a job whose version is no
    longer the one read is left out (it has no event)."""
    sets = "".join(f'"{a.column}" = {a.sql}, ' for a in assignments)
    sql = (
        "WITH batch AS (SELECT * FROM unnest(%s::uuid[], %s::integer[], %s::jsonb[]) "
        "AS b(job_id, read_version, event_payload)), "
        f'job AS (UPDATE "{RunnerJob._meta.db_table}" AS j SET {sets}version = j.version + 1 '
        "FROM batch WHERE j.id = batch.job_id AND j.version = batch.read_version "
        "RETURNING j.id, batch.event_payload) "
        + _event_insert("job", "VALUES (0, NULL::bigint, %s, %s, job.event_payload)")
    )
    params = [
        [job.pk for job in jobs],
        [job.version for job in jobs],
        [json.dumps(payload) for payload in payloads],
        *(p for a in assignments for p in a.params),
        event_type,
        actor,
    ]
    return _events_written(sql, params)


def _events_written(sql: str, params: Sequence[Any]) -> list[JobEvent]:
    """Run a statement whose rows are the events it wrote; those events."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        JobEvent(
            id=id,
            job_id=job_id,
            step_id=step_id,
            type=type,
            actor=actor,
            payload=_json_value(payload),
            timestamp=timestamp,
        )
        for id, job_id, step_id, type, actor, payload, timestamp in rows
    ]


def jobs_insert(jobs: Sequence[tuple[RunnerJob, Sequence[EventSpec]]]) -> list[JobEvent]:
    """``job_insert`` for a batch, in one statement: each job (an unsaved instance with every
    field set, ``version`` counting its events) and its own events. The events written, in job
    id order."""
    fields = _columns()
    names = ", ".join(f'"{f.column}"' for f in fields)
    row = "(" + ", ".join("%s" for _ in fields) + ")"
    events_of_job = "(SELECT job.id, batch.events FROM job JOIN batch ON batch.job_id = job.id)"
    event_values = (
        "SELECT x.n, NULL::bigint, x.item->>'type', x.item->>'actor', x.item->'payload' "
        "FROM jsonb_array_elements(job.events) WITH ORDINALITY AS x(item, n)"
    )
    sql = (
        f'WITH job AS (INSERT INTO "{RunnerJob._meta.db_table}" ({names}) '
        f"VALUES {', '.join(row for _ in jobs)} RETURNING id), "
        "batch AS (SELECT * FROM unnest(%s::uuid[], %s::jsonb[]) AS b(job_id, events)), "
        f"ev AS ({_event_insert(events_of_job, event_values)}) "
        "SELECT id, job_id, step_id, type, actor, payload, timestamp FROM ev"
    )
    params: list[Any] = [
        field.get_db_prep_save(field.pre_save(job, add=True), connection)
        for job, _ in jobs
        for field in fields
    ]
    params.append([job.pk for job, _ in jobs])
    params.append(
        [
            json.dumps([{"type": t, "actor": a, "payload": p} for t, a, p in events])
            for _, events in jobs
        ]
    )
    return _events_written(sql, params)
