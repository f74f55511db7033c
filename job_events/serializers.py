"""Input and output shapes of the webhooks API."""

from typing import Any, cast

from rest_framework import serializers

from job_events.models import WebhookEndpoint
from job_events.validators import WEBHOOK_URL_VALIDATORS
from workspaces.models import Workspace
from workspaces.selectors import workspaces_for_user


class WebhookEndpointSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    """An endpoint as listed: never its secret."""

    workspace: "serializers.SlugRelatedField[Workspace]" = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "workspace", "url", "event_types", "is_active", "created_at"]
        read_only_fields = fields


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    """The answer to a create: the one time the secret is shown."""

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointCreateSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    """The body of a create. The model's validators check the URL (http/https only) and the
    event types; the workspace must be one of the caller's (the view checks the role)."""

    workspace: "serializers.SlugRelatedField[Workspace]" = serializers.SlugRelatedField(
        slug_field="slug", queryset=Workspace.objects.none()
    )
    # Declared: DRF drops a model URLField's URLValidator, and with it the http/https rule.
    url = serializers.URLField(max_length=2000, validators=WEBHOOK_URL_VALIDATORS)

    class Meta:
        model = WebhookEndpoint
        fields = ["workspace", "url", "event_types"]
        # The model's default (no types) would make an endpoint that never fires.
        extra_kwargs = {"event_types": {"required": True}}

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        # Another tenant's slug reads as unknown: its existence is not revealed.
        workspace = cast("serializers.SlugRelatedField[Workspace]", fields["workspace"])
        workspace.queryset = workspaces_for_user(self.context["request"].user)
        return fields
