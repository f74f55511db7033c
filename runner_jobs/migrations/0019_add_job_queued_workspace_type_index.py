"""The claim's walk over (workspace, type) pairs with queued jobs (decision 0141): a partial
index built CONCURRENTLY, so a live table of any size keeps taking writes (non-atomic)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0018_add_job_type_policy"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="runnerjob",
            index=models.Index(
                condition=models.Q(("status", "queued")),
                fields=["workspace", "type", "-priority", "created_at"],
                name="job_queued_workspace_type_idx",
            ),
        ),
    ]
