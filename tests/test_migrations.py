import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from tests.factories import job_in_state


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def _relfilenode(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relfilenode FROM pg_class WHERE oid = %s::regclass", [table])
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_tags_and_metadata_are_added_without_rewriting_the_jobs_table():
    """Migrations 0010-0012 (tags, metadata, their GIN indexes, operations) keep the jobs
    table's file: a rewrite would give it a new relfilenode. The indexes are built
    CONCURRENTLY, in a non-atomic migration."""
    job = job_in_state("pending")
    call_command("migrate", "runner_jobs", "0009", verbosity=0)
    before = _relfilenode("runner_jobs_runnerjob")
    try:
        call_command("migrate", "runner_jobs", verbosity=0)
    finally:
        call_command("migrate", verbosity=0)
    assert _relfilenode("runner_jobs_runnerjob") == before
    job.refresh_from_db()
    assert (job.tags, job.metadata) == ([], {})
    migration = MigrationLoader(connection).get_migration(
        "runner_jobs", "0011_add_job_tags_and_metadata_indexes"
    )
    assert migration.atomic is False
    sql = " ".join(
        str(s)
        for s in call_command(
            "sqlmigrate", "runner_jobs", "0011_add_job_tags_and_metadata_indexes", verbosity=0
        ).splitlines()
    )
    assert sql.count("CREATE INDEX CONCURRENTLY") == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("name", "statement"),
    [
        ("0019_add_job_queued_workspace_type_index", "CREATE INDEX CONCURRENTLY"),
        ("0020_remove_job_queued_workspace_idx", "DROP INDEX CONCURRENTLY"),
    ],
)
def test_the_claim_index_swap_never_locks_the_jobs_table(name, statement):
    """The pair index is built, and the index it replaces dropped, CONCURRENTLY (non-atomic
    migrations): a live jobs table keeps taking creates and claims meanwhile."""
    migration = MigrationLoader(connection).get_migration("runner_jobs", name)
    assert migration.atomic is False
    sql = call_command("sqlmigrate", "runner_jobs", name, verbosity=0)
    assert statement in sql
