# Built CONCURRENTLY: the jobs table may hold millions of rows. Partial: only scheduled jobs.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0008_validate_job_schedule_fk"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="runnerjob",
            index=models.Index(
                condition=models.Q(("schedule__isnull", False)),
                fields=["schedule", "-created_at"],
                name="job_schedule_idx",
            ),
        ),
    ]
