"""``run_at``: a nullable column, no table rewrite."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runner_jobs", "0014_add_job_unique_key"),
    ]

    operations = [
        migrations.AddField(
            model_name="runnerjob",
            name="run_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
