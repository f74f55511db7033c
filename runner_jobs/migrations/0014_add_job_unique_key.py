"""``unique_key``: a nullable column (no table rewrite) and a partial unique index over live
jobs, built CONCURRENTLY (a non-atomic migration) so a live table keeps taking writes; Django's
state records it as the model's conditional UniqueConstraint."""

from django.db import migrations, models

INDEX = "job_unique_key_live"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0013_add_dispatcher_fields_and_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="runnerjob",
            name="unique_key",
            field=models.CharField(blank=True, max_length=128, null=True),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} "
                    "ON runner_jobs_runnerjob (workspace_id, unique_key) "
                    "WHERE unique_key IS NOT NULL "
                    "AND status IN ('pending', 'queued', 'running')",
                    f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
                )
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name="runnerjob",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(
                            ("status__in", ["pending", "queued", "running"]),
                            ("unique_key__isnull", False),
                        ),
                        fields=("workspace", "unique_key"),
                        name=INDEX,
                    ),
                )
            ],
        ),
    ]
