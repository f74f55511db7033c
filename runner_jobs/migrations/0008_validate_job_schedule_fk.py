"""Validates the foreign key 0007 added NOT VALID: a scan of the jobs table under a lock that
lets reads and writes go on (SHARE UPDATE EXCLUSIVE)."""

from django.db import migrations

FK_NAME = "runner_jobs_runnerjob_schedule_id_fk_runner_jobs_schedule_id"


class Migration(migrations.Migration):
    dependencies = [
        ("runner_jobs", "0007_create_schedule_and_worker"),
    ]

    operations = [
        migrations.RunSQL(
            f"ALTER TABLE runner_jobs_runnerjob VALIDATE CONSTRAINT {FK_NAME}",
            migrations.RunSQL.noop,
        ),
    ]
