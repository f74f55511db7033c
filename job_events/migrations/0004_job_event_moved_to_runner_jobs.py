"""The other half of runner_jobs 0004: the delivery log points at runner_jobs.JobEvent and
job_events forgets the model. State only; the database does not change."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("job_events", "0003_add_webhook_endpoints_and_delivery_log"),
        ("runner_jobs", "0004_move_job_event_into_runner_jobs"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="webhookdelivery",
                    name="event",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="runner_jobs.jobevent",
                    ),
                ),
                migrations.DeleteModel(name="JobEvent"),
            ],
            database_operations=[],
        ),
    ]
