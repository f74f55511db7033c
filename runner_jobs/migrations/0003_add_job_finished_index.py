# Built CONCURRENTLY: the jobs table may hold millions of rows, and a plain CREATE INDEX would
# block every write to it while it runs.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0002_add_runner_job_version_for_concurrency"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="runnerjob",
            index=models.Index(
                condition=models.Q(("completed_at__isnull", False)),
                fields=["completed_at", "status", "type"],
                name="job_finished_idx",
            ),
        ),
    ]
