"""JobEvent moves from job_events to runner_jobs in Django's state only: the table, its
sequence, indexes and rows stay as they are (``db_table`` keeps the old name), so this runs in
no time on a table of any size. The content type follows, so permissions and admin log entries
keep pointing at the model. See docs/decisions/0090-app-layers.md."""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models


def content_type_to_runner_jobs(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label="runner_jobs", model="jobevent").exists():
        content_type.objects.filter(app_label="job_events", model="jobevent").update(
            app_label="runner_jobs"
        )


def content_type_to_job_events(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label="job_events", model="jobevent").exists():
        content_type.objects.filter(app_label="runner_jobs", model="jobevent").update(
            app_label="job_events"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("runner_jobs", "0003_add_job_finished_index"),
        ("job_events", "0003_add_webhook_endpoints_and_delivery_log"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="JobEvent",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("type", models.CharField(max_length=64)),
                        (
                            "timestamp",
                            models.DateTimeField(
                                db_default=django.db.models.functions.datetime.Now()
                            ),
                        ),
                        ("actor", models.CharField(max_length=255)),
                        ("payload", models.JSONField(blank=True, default=dict)),
                        (
                            "job",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="events",
                                to="runner_jobs.runnerjob",
                            ),
                        ),
                        (
                            "step",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="events",
                                to="runner_jobs.jobstep",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "job_events_jobevent",
                        "ordering": ["timestamp", "id"],
                        "indexes": [
                            models.Index(fields=["job", "timestamp"], name="job_event_job_ts_idx")
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_runner_jobs, content_type_to_job_events),
    ]
