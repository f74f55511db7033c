from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from job_events.validators import WEBHOOK_URL_VALIDATORS, validate_event_types
from runner_jobs.models import JobEvent


class WebhookEndpoint(models.Model):
    """A workspace's URL that is sent (POSTed, signed) every event of the types it names.

    ``secret`` signs the deliveries, so it is kept as it is (the sender needs it); it is shown
    once, when the endpoint is made, and never again by the API or the admin.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000, validators=WEBHOOK_URL_VALIDATORS)
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

    def clean(self) -> None:
        """A workspace has at most ``RUNNER_WEBHOOK_MAX_ENDPOINTS_PER_WORKSPACE`` endpoints (the
        service counts again under the workspace's row lock)."""
        if self.pk is not None or self.workspace_id is None:
            return
        limit = settings.RUNNER_WEBHOOK_MAX_ENDPOINTS_PER_WORKSPACE
        if WebhookEndpoint.objects.filter(workspace_id=self.workspace_id).count() >= limit:
            raise ValidationError(
                {"workspace": f"This workspace has {limit} webhook endpoints, the most allowed."},
                code="too_many_endpoints",
            )


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


class PendingDelivery(models.Model):
    """The outbox: one event still to be delivered to one endpoint.

    Written in the transaction of the event itself, so a delivery exists as soon as its event
    does, whatever happens to the broker; deleted once delivered or given up. ``resend_at`` is
    when the outbox sweep sends its message again if the row is still here then: a while after
    each hand-over to the broker (in case the message is lost), at once when the hand-over failed.
    """

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="pending_deliveries"
    )
    event = models.ForeignKey(JobEvent, on_delete=models.CASCADE, related_name="pending_deliveries")
    # Attempts made so far; the next one is not made before ``due_at``.
    attempts = models.PositiveIntegerField(default=0)
    due_at = models.DateTimeField()
    resend_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "pending deliveries"

    def __str__(self) -> str:
        return f"event {self.event_id} -> endpoint {self.endpoint_id} (pending)"
