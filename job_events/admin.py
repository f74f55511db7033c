from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from runner_jobs.admin import ReadOnlyAdminMixin, job_link
from runner_jobs.admin_paging import EstimatedCountPaginator

from .herald import webhook_secret_new
from .models import JobEvent, WebhookDelivery, WebhookEndpoint

# Lifecycle event types the service layer writes; a filter listing them avoids Django's default
# SELECT DISTINCT over every event.
LIFECYCLE_EVENT_TYPES = (
    "job.created",
    "job.queued",
    "job.started",
    "job.progress",
    "job.retry_scheduled",
    "job.completed",
    "job.failed",
    "job.cancelled",
    "job.retried",
    "step.started",
    "step.completed",
    "step.failed",
    "step.skipped",
    "step.output",
)


class EventTypeFilter(admin.SimpleListFilter):
    """Offered on one job's events only: across ten million events a rare type has no index to
    find it by, so the filter would scan them all."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        if "job" not in request.GET:
            return []
        return [(t, t) for t in LIFECYCLE_EVENT_TYPES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(type=self.value())
        return queryset


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Append-only and read-only. ``?job=<id>`` lists one job's events (the job page links
    here)."""

    list_display = ["id", "job_short", "type", "actor", "timestamp"]
    list_filter = [EventTypeFilter]
    raw_id_fields = ["job", "step"]
    # Newest first by id (the primary key): ordering by timestamp would sort ten million rows.
    ordering = ["-id"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_per_page = 100

    @admin.display(description="job")
    def job_short(self, event: JobEvent) -> SafeString:
        return job_link(event.job_id)


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
        if not change:
            obj.secret = webhook_secret_new()
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if not change:
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
