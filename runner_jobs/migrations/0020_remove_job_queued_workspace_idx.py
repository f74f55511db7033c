"""Drop ``job_queued_workspace_idx``: the claim walks (workspace, type) pairs over
``job_queued_workspace_type_idx`` since 0019, whose leading column serves a workspace's queued
jobs too, so the older index only cost every create and every move in or out of ``queued`` a
write. Dropped CONCURRENTLY (non-atomic), so a live table keeps taking writes."""

from django.contrib.postgres.operations import RemoveIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0019_add_job_queued_workspace_type_index"),
    ]

    operations = [
        RemoveIndexConcurrently(model_name="runnerjob", name="job_queued_workspace_idx"),
    ]
