"""Events record the id of the transaction that inserted them (``xid8``), for the workspace
feed's order (docs/decisions/0100-workspace-feed.md).

Two steps, so a table of ten million events is not rewritten: the column is added nullable and
without a default (a catalog change only), then given its default, which applies to new rows
only (``pg_current_xact_id()`` is volatile: as an ADD COLUMN default it would rewrite every
row). Existing events keep NULL, which the feed reads as "committed long ago"."""

from django.db import migrations, models

import runner_jobs.models


class Migration(migrations.Migration):
    dependencies = [
        ("runner_jobs", "0004_move_job_event_into_runner_jobs"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="jobevent",
                    name="xid",
                    field=runner_jobs.models.TransactionIdField(
                        db_default=models.Func(function="pg_current_xact_id"),
                        editable=False,
                        null=True,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE job_events_jobevent ADD COLUMN xid xid8 NULL",
                    "ALTER TABLE job_events_jobevent DROP COLUMN xid",
                ),
                migrations.RunSQL(
                    "ALTER TABLE job_events_jobevent ALTER COLUMN xid SET DEFAULT pg_current_xact_id()",
                    "ALTER TABLE job_events_jobevent ALTER COLUMN xid DROP DEFAULT",
                ),
            ],
        ),
    ]
