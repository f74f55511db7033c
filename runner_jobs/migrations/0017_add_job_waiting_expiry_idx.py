"""The sweeper's expiry pass reads live jobs with an expiry, soonest first: a small partial
index, built CONCURRENTLY (a non-atomic migration) so a live table keeps taking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0016_add_job_ttl_timeout_expired"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="runnerjob",
            index=models.Index(
                condition=models.Q(("expires_at__isnull", False), ("status__in", ["pending", "queued"])),
                fields=["expires_at"],
                name="job_waiting_expiry_idx",
            ),
        ),
    ]
