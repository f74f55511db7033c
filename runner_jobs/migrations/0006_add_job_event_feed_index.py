# Built CONCURRENTLY: the events table may hold tens of millions of rows, and a plain CREATE INDEX
# would block every event insert (so every job write) while it runs.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models
from django.db.models.functions import Cast, Coalesce

import runner_jobs.models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("runner_jobs", "0005_add_job_event_xid"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="jobevent",
            index=models.Index(
                Coalesce(
                    "xid",
                    Cast(models.Value("0"), output_field=runner_jobs.models.TransactionIdField()),
                    output_field=runner_jobs.models.TransactionIdField(),
                ),
                models.F("id"),
                name="job_event_feed_idx",
            ),
        ),
    ]
