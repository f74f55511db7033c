"""Staff admin for jobs. Read-only pages: every change goes through ``runner_jobs.services``, from
the "Cancel/Retry selected jobs" actions or the Cancel/Retry buttons of a job's page, with the
actor ``staff:<username>``. Built to stay fast with millions of jobs (see
docs/decisions/0040-admin-at-scale.md)."""

import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.translation import ngettext

from runner_jobs import services
from runner_jobs.admin_dashboard import dashboard_view, format_duration
from runner_jobs.admin_paging import EstimatedCountPaginator
from runner_jobs.events import EventType
from runner_jobs.models import ACTIVE_STATUSES, JobEvent, JobStep, RunnerJob
from runner_jobs.registry import job_types
from runner_jobs.services.transitions import RETRYABLE_STATUSES

# One request runs one service call per selected job; past this many, narrow the filter.
ACTION_MAX_JOBS = 500
LATEST_EVENTS_SHOWN = 50
STEPS_SHOWN = 100
RETRIES_SHOWN = 20

# The job page, section by section; every field is read-only.
JOB_PAGE_FIELDS: tuple[tuple[str | None, tuple[str, ...]], ...] = (
    (
        None,
        (
            "id",
            "type",
            "status_badge",
            "progress_bar",
            "workspace",
            "priority",
            "attempts_display",
            "agent_task_id",
            "created_by",
            "version",
        ),
    ),
    (
        "Outcome",
        (
            "error_display",
            "result",
            "payload",
        ),
    ),
    (
        "Timing",
        (
            "created_at",
            "queued_at",
            "due_at",
            "started_at",
            "completed_at",
            "duration",
        ),
    ),
    (
        "Lease",
        (
            "lease_owner",
            "lease_expires_at",
        ),
    ),
    (
        "Retry lineage",
        (
            "retry_of_link",
            "retries_links",
        ),
    ),
    ("Events", ("all_events_link",)),
)
STEP_FIELDS = ("ordinal", "name", "phase", "status", "started_at", "duration_ms", "short_output")
EVENT_FIELDS = ("at", "type", "actor", "step", "payload")

JobCall = Callable[[uuid.UUID, str, HttpRequest], Any]


def staff_actor(request: HttpRequest) -> str:
    return f"staff:{request.user.get_username()}"


def job_admin_url(job_id: uuid.UUID | str) -> str:
    return reverse("admin:runner_jobs_runnerjob_change", args=[job_id])


def job_link(job_id: uuid.UUID | str, status: str | None = None) -> SafeString:
    label = str(job_id)[:8]
    if status:
        return format_html(
            '<a href="{}">{}</a> {}', job_admin_url(job_id), label, status_badge(status)
        )
    return format_html('<a href="{}">{}</a>', job_admin_url(job_id), label)


def status_badge(status: str) -> SafeString:
    return format_html('<span class="rj-badge rj-{}">{}</span>', status, status)


def progress_bar(progress: int) -> SafeString:
    return format_html(
        '<span class="rj-progress" title="{}%"><span style="width:{}%"></span></span>'
        ' <span class="rj-progress-label">{}%</span>',
        progress,
        progress,
        progress,
    )


def job_duration(job: RunnerJob) -> timedelta | None:
    """Run time of the current attempt: until it ended, or until now while it runs."""
    if job.started_at is None:
        return None
    return (job.completed_at or timezone.now()) - job.started_at


def jobs_apply(
    request: HttpRequest, job_ids: Iterable[uuid.UUID], *, verb: str, call: JobCall
) -> list[Any]:
    """Run ``call`` for each job through the service layer and report one message per outcome:
    how many succeeded, and how many were skipped for each reason."""
    actor = staff_actor(request)
    results: list[Any] = []
    skipped: Counter[str] = Counter()
    for job_id in job_ids:
        try:
            results.append(call(job_id, actor, request))
        except services.JobServiceError as exc:
            skipped[exc.detail] += 1
    if results:
        messages.success(
            request,
            ngettext("%(verb)s %(n)d job.", "%(verb)s %(n)d jobs.", len(results))
            % {"verb": verb, "n": len(results)},
        )
    # Most frequent reason first; ties alphabetically, so the messages read the same each time.
    for reason, n in sorted(skipped.items(), key=lambda item: (-item[1], item[0])):
        messages.warning(
            request,
            ngettext("Skipped %(n)d job: %(reason)s", "Skipped %(n)d jobs: %(reason)s", n)
            % {"n": n, "reason": reason},
        )
    return results


def _cancel(job_id: uuid.UUID, actor: str, request: HttpRequest) -> RunnerJob:
    return services.job_cancel(job_id=job_id, actor=actor)


def _retry(job_id: uuid.UUID, actor: str, request: HttpRequest) -> RunnerJob:
    # A job is retried once (the service's rule), so selecting it again (e.g. "all failed
    # jobs") is skipped with the service's reason. Admin views run for logged-in staff only.
    return services.job_retry(job_id=job_id, actor=actor, created_by=cast(User, request.user))


def _has_retry() -> Exists:
    return Exists(RunnerJob.objects.filter(retry_of=OuterRef("pk")))


class JobTypeFilter(admin.SimpleListFilter):
    """Registered types, from the registry: Django's default would SELECT DISTINCT over every
    job."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(job_types())]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(type=self.value())
        return queryset


class RetriedFilter(admin.SimpleListFilter):
    """Failed and cancelled jobs stay so when retried: "not retried" leaves the ones still to
    look at."""

    title = "retried"
    parameter_name = "retried"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Not retried"), ("yes", "Retried")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "no":
            return queryset.filter(~_has_retry())
        if self.value() == "yes":
            return queryset.filter(_has_retry())
        return queryset


def bounded_formset(*, ordering: tuple[str, ...], limit: int) -> type[BaseInlineFormSet]:
    """An inline formset showing at most ``limit`` rows in ``ordering``: a job page stays fast
    whatever the number of its events or steps."""

    class BoundedFormSet(BaseInlineFormSet):
        def get_queryset(self) -> Any:
            if not hasattr(self, "_bounded_queryset"):
                self._bounded_queryset = super().get_queryset().order_by(*ordering)[:limit]
            return self._bounded_queryset

    return BoundedFormSet


class ReadOnlyAdminMixin:
    """Pages to look at, never to edit: steps and events are written by the services only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobStepInline(ReadOnlyInline):
    model = JobStep
    formset = bounded_formset(ordering=("ordinal",), limit=STEPS_SHOWN)
    fields = STEP_FIELDS
    readonly_fields = STEP_FIELDS
    verbose_name_plural = f"steps (first {STEPS_SHOWN})"

    @admin.display(description="output")
    def short_output(self, step: JobStep) -> str:
        return Truncator(step.output).chars(200)


class LatestEventInline(ReadOnlyInline):
    model = JobEvent
    formset = bounded_formset(ordering=("-timestamp", "-id"), limit=LATEST_EVENTS_SHOWN)
    fields = EVENT_FIELDS
    readonly_fields = EVENT_FIELDS
    verbose_name_plural = f"latest events (newest first, at most {LATEST_EVENTS_SHOWN})"

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobEvent]:
        return super().get_queryset(request).select_related("step")

    @admin.display(description="timestamp")
    def at(self, event: JobEvent) -> str:
        return timezone.localtime(event.timestamp).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@admin.register(RunnerJob)
class RunnerJobAdmin(admin.ModelAdmin):
    """Jobs are never edited in a form: the page is read-only and the actions and buttons call
    the service layer, so the state machine, locks and events hold as for every other caller."""

    list_display = [
        "short_id",
        "type",
        "status_badge",
        "progress_bar",
        "workspace",
        "attempts_display",
        "created_at",
        "duration",
    ]
    list_filter = ["status", JobTypeFilter, RetriedFilter, "workspace", "created_at"]
    list_select_related = ["workspace"]
    search_fields = ["id", "agent_task_id"]
    search_help_text = "A job id (full, or its first characters) or an agent_task_id."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_per_page = 50
    actions = ["cancel_selected", "retry_selected"]
    inlines = [JobStepInline, LatestEventInline]
    fieldsets = [(name, {"fields": fields}) for name, fields in JOB_PAGE_FIELDS]
    readonly_fields = tuple(field for _, fields in JOB_PAGE_FIELDS for field in fields)

    class Media:
        css = {"all": ["runner_jobs/admin.css"]}

    # --- permissions: read-only pages, writes only through actions and buttons ---------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The model-level "change" permission allows the actions and buttons; a job's form is
        # never saved, so its page is always the read-only view.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def can_act(self, request: HttpRequest) -> bool:
        return self.has_change_permission(request)

    # --- list columns and page fields ---------------------------------------------------------

    @admin.display(description="id", ordering="id")
    def short_id(self, job: RunnerJob) -> str:
        return str(job.id)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: RunnerJob) -> SafeString:
        return status_badge(job.status)

    @admin.display(description="progress")
    def progress_bar(self, job: RunnerJob) -> SafeString:
        return progress_bar(job.progress)

    @admin.display(description="attempts")
    def attempts_display(self, job: RunnerJob) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="duration")
    def duration(self, job: RunnerJob) -> str:
        return format_duration(job_duration(job))

    @admin.display(description="error")
    def error_display(self, job: RunnerJob) -> SafeString | str:
        if not job.error:
            return "-"
        return format_html('<pre class="rj-error">{}</pre>', job.error)

    @admin.display(description="retry of")
    def retry_of_link(self, job: RunnerJob) -> SafeString | str:
        if job.retry_of_id is None:
            return "-"
        return job_link(job.retry_of_id)

    @admin.display(description="retries")
    def retries_links(self, job: RunnerJob) -> SafeString | str:
        retries = job.retries.order_by("created_at").values_list("id", "status")[:RETRIES_SHOWN]
        if not retries:
            return "-"
        return format_html_join(", ", "{}", ((job_link(pk, status),) for pk, status in retries))

    @admin.display(description="all events")
    def all_events_link(self, job: RunnerJob) -> SafeString:
        url = reverse("admin:runner_jobs_jobevent_changelist")
        # ``version`` counts the job's changes, one event each: no COUNT over the events.
        return format_html(
            '<a href="{}?job={}">All {} events of this job</a>', url, job.pk, job.version
        )

    # --- search: by id (or its first characters) and agent_task_id, on indexes ----------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[RunnerJob], search_term: str
    ) -> tuple[QuerySet[RunnerJob], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(agent_task_id=term)
        id_range = uuid_prefix_range(term)
        if id_range is not None:
            condition |= Q(id__gte=id_range[0], id__lte=id_range[1])
        return queryset.filter(condition), False

    # --- actions --------------------------------------------------------------------------------

    def _apply_to_selection(
        self, request: HttpRequest, queryset: QuerySet[RunnerJob], *, verb: str, call: JobCall
    ) -> None:
        job_ids = list(queryset.order_by().values_list("id", flat=True)[: ACTION_MAX_JOBS + 1])
        if len(job_ids) > ACTION_MAX_JOBS:
            messages.error(
                request,
                f"Select at most {ACTION_MAX_JOBS} jobs at a time (narrow the filter); "
                "nothing was changed.",
            )
            return
        jobs_apply(request, job_ids, verb=verb, call=call)

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[RunnerJob]) -> None:
        self._apply_to_selection(request, queryset, verb="Cancelled", call=_cancel)

    @admin.action(description="Retry selected jobs", permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[RunnerJob]) -> None:
        self._apply_to_selection(request, queryset, verb="Retried", call=_retry)

    # --- the Cancel and Retry buttons of a job's page, and the dashboard ----------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        custom = [
            path("dashboard/", wrap(self.dashboard), name="runner_jobs_dashboard"),
            path(
                "<uuid:object_id>/cancel/",
                wrap(self.cancel_button),
                name="runner_jobs_runnerjob_cancel",
            ),
            path(
                "<uuid:object_id>/retry/",
                wrap(self.retry_button),
                name="runner_jobs_runnerjob_retry",
            ),
        ]
        return custom + super().get_urls()

    def dashboard(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return dashboard_view(request, self.admin_site.each_context(request))

    def _button(
        self, request: HttpRequest, object_id: uuid.UUID, *, verb: str, call: JobCall
    ) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.can_act(request):
            raise PermissionDenied
        job = get_object_or_404(RunnerJob, pk=object_id)
        results = jobs_apply(request, [job.pk], verb=verb, call=call)
        # A retry lands on the new job's page; anything else back on this one.
        target = results[0].pk if results else job.pk
        return HttpResponseRedirect(job_admin_url(target))

    def cancel_button(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        return self._button(request, object_id, verb="Cancelled", call=_cancel)

    def retry_button(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        return self._button(request, object_id, verb="Retried", call=_retry)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: RunnerJob | None = None,
    ) -> HttpResponse:
        if obj is not None and self.can_act(request):
            context["can_cancel"] = obj.status in ACTIVE_STATUSES
            context["can_retry"] = obj.status in RETRYABLE_STATUSES and not obj.retries.exists()
        return super().render_change_form(request, context, add, change, form_url, obj)


def uuid_prefix_range(term: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The UUID range whose ids start with the hex digits ``term`` (dashes ignored), so a short
    id is found with a range scan of the primary key; None when ``term`` is not hex."""
    digits = term.replace("-", "").lower()
    if not 4 <= len(digits) <= 32 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return (
        uuid.UUID(digits.ljust(32, "0")),
        uuid.UUID(digits.ljust(32, "f")),
    )


@admin.register(JobStep)
class JobStepAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["job", "ordinal", "name", "phase", "status", "duration_ms"]
    list_select_related = ["job"]
    raw_id_fields = ["job"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    ordering = ["-id"]


class EventTypeFilter(admin.SimpleListFilter):
    """Offered on one job's events only: across ten million events a rare type has no index to
    find it by, so the filter would scan them all."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        if "job" not in request.GET:
            return []
        return [(t.value, t.value) for t in EventType]

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


# Schedules and workers (their own module, registered on import).
from runner_jobs import admin_operators  # noqa: E402, F401
