"""Fill a measurement database with synthetic jobs and events, fast (INSERT ... SELECT
generate_series): ``seed_jobs --jobs 1000000 --events-per-job 10``.

For scale measurements only (docs/decisions/0040-admin-at-scale.md): rows are written with SQL,
not through ``runner_jobs.services``, because a million service calls would take hours. Each job
still looks like one the services wrote: a consistent status and timestamps, and ``version``
equal to its number of events. It refuses to run on a database that already has jobs unless
``--append`` is given, so it cannot mix synthetic rows into a real history by accident."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, models, transaction

from runner_jobs.events import EventType as E
from runner_jobs.models import JobEvent, JobStatus, RunnerJob
from runner_jobs.registry import BUILTIN_JOB_TYPES
from workspaces.models import Workspace

# Status by a hash of the row number, per mille: mostly finished history, some live jobs.
STATUS_SQL = """CASE
    WHEN h < 880 THEN 'completed' WHEN h < 940 THEN 'failed' WHEN h < 970 THEN 'cancelled'
    WHEN h < 985 THEN 'queued' WHEN h < 995 THEN 'running' ELSE 'pending' END"""
# Columns of the synthetic rows; every other column gets its field's default.
JOB_COLUMNS = {
    "id": "gen_random_uuid()",
    "workspace_id": "(%(workspace_ids)s::bigint[])[1 + g %% %(workspace_count)s]",
    "type": "(%(types)s::text[])[1 + (g * 7) %% %(type_count)s]",
    "status": "status",
    "priority": "g %% 10",
    "progress": "CASE status WHEN 'completed' THEN 100 WHEN 'running' THEN 50 ELSE 0 END",
    "payload": "jsonb_build_object('n', g)",
    "result": "CASE WHEN status = 'completed' THEN jsonb_build_object('ok', true) END",
    "error": "CASE WHEN status = 'failed' THEN 'seeded failure #' || (g %% 17) ELSE '' END",
    "agent_task_id": "CASE WHEN g %% 5 = 0 THEN 'task-' || g END",
    "attempts": "CASE WHEN status IN ('pending', 'queued') THEN 0 ELSE 1 END",
    "max_attempts": "3",
    "version": "%(events_per_job)s",
    "created_at": "created",
    "queued_at": "CASE WHEN status <> 'pending' THEN created + interval '1 second' END",
    "due_at": "CASE WHEN status <> 'pending' THEN created + interval '1 second' END",
    "started_at": "CASE WHEN status IN ('running', 'completed', 'failed') "
    "THEN created + interval '2 seconds' END",
    "completed_at": "CASE WHEN status IN ('completed', 'failed', 'cancelled') "
    "THEN created + interval '2 seconds' + (g %% 300) * interval '1 second' END",
    # Labels of known frequencies, for the filter measurements: env:prod/env:staging on half
    # the jobs each, team-0..19 on 5 % each, customer-0..999 on 0.1 % each; metadata the same
    # customer (0.1 %) and one of three regions.
    "tags": "ARRAY[CASE WHEN g %% 2 = 0 THEN 'env:prod' ELSE 'env:staging' END, "
    "'team-' || (g %% 20), 'customer-' || (g %% 1000)]::varchar(64)[]",
    "metadata": "jsonb_build_object('customer', (g %% 1000)::text, "
    "'region', (ARRAY['eu', 'us', 'ap'])[1 + g %% 3])",
}
# One statement per batch: the jobs, then (from what the insert returned) their events.
SEED_SQL = """
WITH new_jobs AS (
    INSERT INTO {table} ({columns})
    SELECT {values}
    FROM (
        SELECT g, h, {status} AS status,
               now() - (g * %(spacing_seconds)s) * interval '1 second' AS created
        FROM (SELECT g, (g * 2654435761) %% 1000 AS h
              FROM generate_series(%(first)s, %(last)s) AS g) AS numbered
    ) AS seeded
    RETURNING id, status, created_at
)
INSERT INTO {event_table} ({event_columns})
SELECT {event_values}
FROM new_jobs AS j, generate_series(1, %(events_per_job)s) AS k
"""
EVENT_COLUMNS = {
    "job_id": "j.id",
    # The last event says where the job ended; the ones before it are a typical history.
    "type": "CASE WHEN k < %(events_per_job)s THEN (%(event_types)s::text[])[k] "
    "WHEN j.status IN ('completed', 'failed', 'cancelled') THEN 'job.' || j.status "
    "ELSE 'job.progress' END",
    "timestamp": "j.created_at + k * interval '100 milliseconds'",
    "actor": "'worker'",
    "payload": "'{}'::jsonb",
}
# Events before a job's last one, in order; a longer history repeats progress reports.
EVENT_TYPE_CYCLE = [E.JOB_CREATED, E.JOB_QUEUED, E.JOB_STARTED] + [E.JOB_PROGRESS] * 17
BATCH = 100_000


def _column_lists(
    model: type[models.Model], columns: dict[str, str], defaults: dict[str, Any]
) -> tuple[str, str]:
    """Column names and SQL values covering every concrete field: ``columns`` as given, the
    rest as their field's default (added to ``defaults`` as parameters), so a column added
    later does not break the seeder."""
    names, values = [], []
    for field in model._meta.concrete_fields:
        column = field.column
        if column in columns:
            value = columns[column]
        elif field.has_default() and not field.primary_key:
            key = f"default_{model._meta.model_name}_{column}"
            defaults[key] = field.get_db_prep_save(field.get_default(), connection)
            value = f"%({key})s"
        else:
            continue
        names.append(connection.ops.quote_name(column))
        values.append(value)
    return ", ".join(names), ", ".join(values)


def seed_sql(params: dict[str, Any], status: str | None = None) -> str:
    """The batch statement (every job in ``status`` when given, else the mix); adds the values
    it uses to ``params``."""
    if status is not None:
        params["status"] = status
    job_columns, job_values = _column_lists(RunnerJob, JOB_COLUMNS, params)
    event_columns, event_values = _column_lists(JobEvent, EVENT_COLUMNS, params)
    return SEED_SQL.format(
        table=connection.ops.quote_name(RunnerJob._meta.db_table),
        columns=job_columns,
        values=job_values,
        status="%(status)s::varchar" if status is not None else STATUS_SQL,
        event_table=connection.ops.quote_name(JobEvent._meta.db_table),
        event_columns=event_columns,
        event_values=event_values,
    )


class Command(BaseCommand):
    help = "Seed synthetic jobs and events for scale measurements (never on a real database)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--jobs", type=int, default=1_000_000)
        parser.add_argument("--events-per-job", type=int, default=10)
        parser.add_argument("--workspaces", type=int, default=20)
        parser.add_argument("--days", type=float, default=30, help="spread of created_at")
        parser.add_argument("--append", action="store_true", help="allow a non-empty database")
        parser.add_argument(
            "--workspace-prefix", default="seed", help="workspaces <prefix>-0, <prefix>-1, ..."
        )
        parser.add_argument(
            "--status",
            choices=JobStatus.values,
            help="every job in this status (default: a mix, mostly finished)",
        )
        parser.add_argument(
            "--type", dest="job_type", help="every job of this type (default: the built-ins)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if RunnerJob.objects.exists() and not options["append"]:
            raise CommandError("The database already has jobs; pass --append to add more.")
        events_per_job = options["events_per_job"]
        if not 1 <= events_per_job <= len(EVENT_TYPE_CYCLE) + 1:
            raise CommandError(
                f"--events-per-job must be between 1 and {len(EVENT_TYPE_CYCLE) + 1}."
            )
        jobs = options["jobs"]
        prefix = options["workspace_prefix"]
        workspace_ids = [
            Workspace.objects.get_or_create(
                slug=f"{prefix}-{i}", defaults={"name": f"{prefix.title()} {i}"}
            )[0].pk
            for i in range(options["workspaces"])
        ]
        types = [options["job_type"]] if options["job_type"] else sorted(BUILTIN_JOB_TYPES)
        params: dict[str, Any] = {
            "workspace_ids": workspace_ids,
            "workspace_count": len(workspace_ids),
            "types": types,
            "type_count": len(types),
            "events_per_job": events_per_job,
            "event_types": EVENT_TYPE_CYCLE,
            "spacing_seconds": options["days"] * 86400 / max(jobs, 1),
        }
        sql = seed_sql(params, status=options["status"])
        for first in range(1, jobs + 1, BATCH):
            last = min(first + BATCH - 1, jobs)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, {**params, "first": first, "last": last})
            self.stdout.write(f"{last}/{jobs} jobs")
        # Fresh statistics for the planner and the estimated counts. VACUUM (visibility map, for
        # index-only scans) cannot run inside a transaction, such as a test's.
        statement = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"
        with connection.cursor() as cursor:
            for model in (RunnerJob, JobEvent):
                cursor.execute(f"{statement} {connection.ops.quote_name(model._meta.db_table)}")
        self.stdout.write(
            self.style.SUCCESS(f"Seeded {jobs} jobs and {jobs * events_per_job} events.")
        )
