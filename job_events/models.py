from django.conf import settings
from django.db import models

from job_events.validators import validate_event_types, webhook_url_validator
from runner_jobs.models import JobEvent


class WebhookEndpoint(models.Model):
    """A workspace's URL that is sent (POSTed, signed) every event of the types it names.

    ``secret`` signs the deliveries, so it is kept as it is (the sender needs it); it is shown
    once, when the endpoint is made, and never again by the API or the admin.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000, validators=[webhook_url_validator])
    # Event types to send: exact names ("job.completed"), a prefix ("job.*") or "*" for all.
    event_types = models.JSONField(default=list, validators=[validate_event_types])
    secret = models.CharField(max_length=128, editable=False)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="webhook_endpoints",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.workspace_id}: {self.url}"


class WebhookDelivery(models.Model):
    """One attempt to deliver one event to one endpoint: the delivery log.

    A retried delivery is several rows (``attempt`` 1, 2, ...), so the log shows every try with
    its status code, latency and error.
    """

    # Indexed by the composite index below (an endpoint's log, newest first).
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    event = models.ForeignKey(JobEvent, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveIntegerField()
    succeeded = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.TextField(blank=True, default="")
    # When the next attempt is due; null when there is none (delivered, or given up).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint_idx"),
        ]

    def __str__(self) -> str:
        outcome = self.status_code or "error"
        return f"event {self.event_id} -> endpoint {self.endpoint_id} #{self.attempt} ({outcome})"
