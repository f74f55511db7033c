from django.db import models
from django.db.models.functions import Now


class JobEvent(models.Model):
    """An append-only record of one change to a job.

    ``timestamp`` is set by PostgreSQL (``STATEMENT_TIMESTAMP()``) at the INSERT, which every
    writer runs after taking the job's row lock, so for one job (timestamp, id) order and id
    order agree. See docs/decisions/0002-event-order.md.
    """

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(
        "runner_jobs.RunnerJob", on_delete=models.CASCADE, related_name="events", db_index=False
    )
    step = models.ForeignKey(
        "runner_jobs.JobStep",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
    )
    type = models.CharField(max_length=64)
    timestamp = models.DateTimeField(db_default=Now())
    actor = models.CharField(max_length=255)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [
            models.Index(fields=["job", "timestamp"], name="job_event_job_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.id}"
