# Built CONCURRENTLY (so non-atomic): a plain CREATE INDEX would block every write to a jobs
# table of millions of rows while it runs. See docs/decisions/0130-tags-and-metadata.md.

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0010_add_job_tags_and_metadata"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="runnerjob",
            index=django.contrib.postgres.indexes.GinIndex(fields=["tags"], name="job_tags_gin_idx"),
        ),
        AddIndexConcurrently(
            model_name="runnerjob",
            index=django.contrib.postgres.indexes.GinIndex(
                fields=["metadata"], name="job_metadata_gin_idx", opclasses=["jsonb_path_ops"]
            ),
        ),
    ]
