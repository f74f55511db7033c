"""Tags and metadata on every job. Both columns have a constant database default, so on
PostgreSQL >= 11 adding them changes the catalog only: no rewrite of a table of any size, and
existing rows read as ``{}`` at once. Their GIN indexes are built in 0006, concurrently."""

import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runner_jobs", "0009_add_job_schedule_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="runnerjob",
            name="metadata",
            field=models.JSONField(
                blank=True,
                db_default=models.Value({}, output_field=models.JSONField()),
                default=dict,
            ),
        ),
        migrations.AddField(
            model_name="runnerjob",
            name="tags",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(max_length=64),
                blank=True,
                db_default=models.Value(
                    [],
                    output_field=django.contrib.postgres.fields.ArrayField(
                        base_field=models.CharField(max_length=64), size=None
                    ),
                ),
                default=list,
                size=None,
            ),
        ),
    ]
