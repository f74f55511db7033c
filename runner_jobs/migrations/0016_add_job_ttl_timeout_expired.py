"""Flow control (SPEC §8): ``ttl_seconds``/``expires_at`` with the terminal status ``expired``,
and ``timeout_seconds``. Nullable columns without a default or a CHECK: adding them neither
rewrites nor scans the table. The new status is a choice only (no database change)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runner_jobs", "0015_add_job_run_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="runnerjob",
            name="ttl_seconds",
            field=models.IntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="runnerjob",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="runnerjob",
            name="timeout_seconds",
            field=models.IntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="runnerjob",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("completed", "Completed"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                    ("expired", "Expired"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
    ]
