from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .herald import webhook_endpoint_create
from .models import WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Endpoints made here get a new secret, shown once in the confirmation message."""

    list_display = ["id", "workspace", "url", "event_types", "is_active", "created_at"]
    list_filter = ["is_active"]
    list_select_related = ["workspace"]
    search_fields = ["url", "workspace__slug"]
    autocomplete_fields = ["workspace"]
    fields = ["workspace", "url", "event_types", "is_active", "delivery_log"]
    readonly_fields = ["delivery_log"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new endpoint is made by the same service as the API's (its secret, its checks).
        created = webhook_endpoint_create(
            workspace=obj.workspace,
            url=obj.url,
            event_types=obj.event_types,
            created_by=cast(User, request.user),
        )
        obj.pk, obj.secret, obj.created_at = created.pk, created.secret, created.created_at
        if not obj.is_active:
            super().save_model(request, obj, form, change=True)
        messages.warning(
            request,
            f"Signing secret of {obj.url}: {obj.secret} — copy it now, it is not shown again.",
        )

    @admin.display(description="delivery log")
    def delivery_log(self, endpoint: WebhookEndpoint) -> SafeString:
        if endpoint.pk is None:
            return format_html("{}", "—")
        url = reverse("admin:job_events_webhookdelivery_changelist")
        return format_html('<a href="{}?endpoint__id__exact={}">attempts</a>', url, endpoint.pk)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The delivery log: one row per attempt, read-only."""

    list_display = [
        "id",
        "created_at",
        "endpoint",
        "event",
        "attempt",
        "succeeded",
        "status_code",
        "latency_ms",
        "error",
        "next_attempt_at",
    ]
    list_filter = ["succeeded", "endpoint"]
    list_select_related = ["endpoint", "event"]
    raw_id_fields = ["endpoint", "event"]
    ordering = ["-id"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
