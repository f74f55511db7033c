"""The dispatcher (docs/decisions/0140-dispatcher.md): the concurrency key and limit, nullable
columns (no table rewrite), and its partial indexes, built CONCURRENTLY so a live table of any
size keeps taking writes: a non-atomic migration."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0012_add_operations"),
    ]

    operations = [
        migrations.AddField(
            model_name="runnerjob",
            name="lease_task_id",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AddField(
            model_name="runnerjob",
            name="concurrency_key",
            field=models.CharField(blank=True, max_length=128, null=True),
        ),
        migrations.AddField(
            model_name="runnerjob",
            name="concurrency_limit",
            field=models.SmallIntegerField(blank=True, null=True),
        ),
        AddIndexConcurrently(
            model_name="runnerjob",
            index=models.Index(
                condition=models.Q(("status", "queued")),
                fields=["workspace", "-priority", "created_at"],
                name="job_queued_workspace_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="runnerjob",
            index=models.Index(
                condition=models.Q(("status", "running")),
                fields=["workspace", "type"],
                name="job_running_workspace_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="runnerjob",
            index=models.Index(
                condition=models.Q(("concurrency_key__isnull", False), ("status", "running")),
                fields=["workspace", "concurrency_key"],
                name="job_running_key_idx",
            ),
        ),
    ]
