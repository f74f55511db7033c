"""Schedules and workers (new, empty tables), and the job's ``schedule`` link.

The link is added to the live jobs table without a rewrite or a long lock: a nullable column
without a default, and its foreign key ``NOT VALID`` (no scan of existing rows; new rows are
checked). 0008 validates it (a scan that blocks no writes), 0009 indexes it CONCURRENTLY."""

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

FK_NAME = "runner_jobs_runnerjob_schedule_id_fk_runner_jobs_schedule_id"


class Migration(migrations.Migration):
    dependencies = [
        ("runner_jobs", "0006_add_job_event_feed_index"),
        ("workspaces", "0001_create_workspace_and_membership"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Schedule",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("cron", models.CharField(blank=True, default="", max_length=200)),
                ("interval_seconds", models.PositiveIntegerField(blank=True, null=True)),
                ("timezone", models.CharField(default="UTC", max_length=64)),
                ("job", models.JSONField(default=dict)),
                (
                    "overlap",
                    models.CharField(
                        choices=[
                            ("allow", "Allow"),
                            ("skip", "Skip while the previous job is live"),
                        ],
                        default="allow",
                        max_length=8,
                    ),
                ),
                ("paused", models.BooleanField(default=False)),
                ("next_run_at", models.DateTimeField()),
                ("last_run_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="runner_job_schedules",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="schedules",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "ordering": ["workspace", "name"],
                "indexes": [
                    models.Index(
                        condition=models.Q(("paused", False)),
                        fields=["next_run_at"],
                        name="schedule_due_idx",
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("workspace", "name"), name="schedule_unique_name"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("cron", ""), ("interval_seconds__isnull", False)),
                            models.Q(
                                models.Q(("cron", ""), _negated=True),
                                ("interval_seconds__isnull", True),
                            ),
                            _connector="OR",
                        ),
                        name="schedule_cron_xor_interval",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("interval_seconds__isnull", True),
                            ("interval_seconds__gte", 10),
                            _connector="OR",
                        ),
                        name="schedule_interval_min",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Worker",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[("celery", "Celery worker"), ("coordinator", "Coordinator")],
                        max_length=16,
                    ),
                ),
                ("name", models.CharField(max_length=255)),
                ("hostname", models.CharField(blank=True, default="", max_length=255)),
                ("pid", models.PositiveIntegerField(blank=True, null=True)),
                ("started_at", models.DateTimeField()),
                ("last_seen_at", models.DateTimeField()),
                ("stopped_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["kind", "name"],
                "constraints": [
                    models.UniqueConstraint(fields=("kind", "name"), name="worker_unique_name")
                ],
            },
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="runnerjob",
                    name="schedule",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="jobs",
                        to="runner_jobs.schedule",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE runner_jobs_runnerjob ADD COLUMN schedule_id uuid NULL",
                    "ALTER TABLE runner_jobs_runnerjob DROP COLUMN schedule_id",
                ),
                migrations.RunSQL(
                    f"ALTER TABLE runner_jobs_runnerjob ADD CONSTRAINT {FK_NAME} "
                    "FOREIGN KEY (schedule_id) REFERENCES runner_jobs_schedule (id) "
                    "DEFERRABLE INITIALLY DEFERRED NOT VALID",
                    f"ALTER TABLE runner_jobs_runnerjob DROP CONSTRAINT {FK_NAME}",
                ),
            ],
        ),
    ]
