"""Reads of webhook endpoints for the herald."""

from job_events.models import WebhookEndpoint


def webhook_endpoints_active(*, workspace_id: int) -> list[WebhookEndpoint]:
    """The active endpoints of a workspace (one query; usually none)."""
    return list(WebhookEndpoint.objects.filter(workspace_id=workspace_id, is_active=True))
