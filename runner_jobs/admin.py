"""Staff admin for jobs. Read-only pages: every change goes through ``runner_jobs.services``, from
the "Cancel/Retry selected jobs" actions or the Cancel/Retry buttons of a job's page, with the
actor ``staff:<username>``. Built to stay fast with millions of jobs (see
docs/decisions/0040-admin-at-scale.md)."""

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, ClassVar, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Now
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.translation import ngettext

from runner_jobs import services
from runner_jobs.admin_dashboard import dashboard_view, format_duration
from runner_jobs.admin_paging import EstimatedCountPaginator
from runner_jobs.admin_readonly import ReadOnlyAdminMixin, staff_actor
from runner_jobs.events import EventType
from runner_jobs.explain import job_explain
from runner_jobs.labels import METADATA_VALUE_MAX_LENGTH, tag_error
from runner_jobs.models import (
    ACTIVE_STATUSES,
    JobEvent,
    JobStep,
    Operation,
    OperationAction,
    OperationStatus,
    RunnerJob,
)
from runner_jobs.registry import job_types
from runner_jobs.services.transitions import RETRYABLE_STATUSES
from workspaces.models import Workspace

# Selected rows of one page are acted on in the request; "select all" (across pages) starts a
# bulk operation instead (runner_jobs.services.operations).
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
            "tags_display",
            "metadata",
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
        "Flow control",
        (
            "run_at",
            "concurrency_key",
            "concurrency_limit",
            "unique_key",
            "ttl_seconds",
            "expires_at",
            "timeout_seconds",
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


def operation_admin_url(operation_id: uuid.UUID | str) -> str:
    return reverse("admin:runner_jobs_operation_change", args=[operation_id])


def operation_start_from_admin(
    request: HttpRequest, queryset: QuerySet[RunnerJob], *, action: str
) -> Operation:
    """A bulk operation on every job of the changelist's selection (its filters and search):
    one workspace when the selection has one, else none (staff only see it, in the admin)."""
    workspaces = list(queryset.order_by().values_list("workspace", flat=True).distinct()[:2])
    workspace = Workspace.objects.get(pk=workspaces[0]) if len(workspaces) == 1 else None
    query = request.GET.urlencode()
    operation = services.operation_start(
        jobs=queryset,
        action=action,
        workspace=workspace,
        filters={"admin": query} if query else {},
        actor=staff_actor(request),
        created_by=cast(User, request.user),
    )
    messages.success(
        request,
        format_html(
            'Started operation <a href="{}">{}</a>: {} {} jobs; follow its progress there.',
            operation_admin_url(operation.pk),
            str(operation.pk)[:8],
            operation.action,
            operation.matched,
        ),
    )
    return operation


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


class TextInputFilter(admin.SimpleListFilter):
    """A filter typed in, not picked from a list: distinct tags or metadata pairs over millions
    of jobs would cost a scan to list. Renders a small GET form keeping the other parameters."""

    template = "admin/runner_jobs/text_input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: Any) -> Iterator[Any]:
        yield {
            "parameter": self.parameter_name,
            "value": self.value() or "",
            "placeholder": self.placeholder,
            "others": [(k, v) for k, v in changelist.params.items() if k != self.parameter_name],
            "clear": changelist.get_query_string(remove=[self.parameter_name]),
        }

    def refused(self, request: HttpRequest, queryset: QuerySet[Any], error: str) -> QuerySet[Any]:
        messages.error(request, error)
        return queryset.none()


class TagFilter(TextInputFilter):
    """Jobs that have this tag (the GIN index on ``tags``)."""

    title = "tag"
    parameter_name = "tag"
    placeholder = "env:prod"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if error := tag_error(value):
            return self.refused(request, queryset, error)
        return queryset.filter(tags__contains=[value])


class MetadataFilter(TextInputFilter):
    """Jobs whose metadata has this ``key=value`` pair (the GIN index on ``metadata``)."""

    title = "metadata"
    parameter_name = "metadata"
    placeholder = "customer=42"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        key, equals, wanted = value.partition("=")
        if not (key and equals):
            return self.refused(request, queryset, "Metadata filter: write key=value.")
        return queryset.filter(metadata__contains={key: wanted})


class ConcurrencyKeyFilter(TextInputFilter):
    """Jobs of this concurrency key (exact)."""

    title = "concurrency key"
    parameter_name = "concurrency_key"
    placeholder = "account-42"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(concurrency_key=value) if value else queryset


class FlowControlFilter(admin.SimpleListFilter):
    """Jobs by the flow-control fields they were created with (SPEC §8)."""

    title = "flow control"
    parameter_name = "flow"
    CHOICES: ClassVar[dict[str, tuple[str, Q]]] = {
        "run_at": ("Waits for its run_at", Q(status="queued", due_at__gt=Now())),
        "key": ("Has a concurrency key", Q(concurrency_key__isnull=False)),
        "unique": ("Has a unique key", Q(unique_key__isnull=False)),
        "ttl": ("Has a ttl", Q(expires_at__isnull=False)),
        "timeout": ("Has a timeout", Q(timeout_seconds__isnull=False)),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, (label, _) in self.CHOICES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        choice = self.CHOICES.get(self.value() or "")
        return queryset.filter(choice[1]) if choice else queryset


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
        "tags_display",
        "created_at",
        "duration",
    ]
    list_filter = [
        "status",
        JobTypeFilter,
        TagFilter,
        MetadataFilter,
        FlowControlFilter,
        ConcurrencyKeyFilter,
        RetriedFilter,
        "workspace",
        "created_at",
    ]
    list_select_related = ["workspace"]
    search_fields = ["id", "agent_task_id"]
    search_help_text = (
        "A job id (full, or its first characters), an agent_task_id, tag:<tag> or "
        "<metadata key>=<value>."
    )
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

    @admin.display(description="tags")
    def tags_display(self, job: RunnerJob) -> SafeString | str:
        if not job.tags:
            return "-"
        return format_html_join(" ", '<span class="rj-tag">{}</span>', ((t,) for t in job.tags))

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
        # tag:<tag> and key=value: the same containment lookups as the filters, on their indexes.
        if term.startswith("tag:"):
            return queryset.filter(tags__contains=[term[len("tag:") :]]), False
        key, equals, value = term.partition("=")
        if key and equals:
            return queryset.filter(metadata__contains={key: value}), False
        condition = Q(agent_task_id=term)
        id_range = uuid_prefix_range(term)
        if id_range is not None:
            condition |= Q(id__gte=id_range[0], id__lte=id_range[1])
        return queryset.filter(condition), False

    # --- actions --------------------------------------------------------------------------------

    def _apply_to_selection(
        self,
        request: HttpRequest,
        queryset: QuerySet[RunnerJob],
        *,
        verb: str,
        call: JobCall,
        action: str,
    ) -> None:
        """The rows ticked on this page are acted on now; "select all" across pages (any number
        of jobs) starts a bulk operation, the same as the API's, and links to its page."""
        if request.POST.get("select_across") == "1":
            operation_start_from_admin(request, queryset, action=action)
            return
        jobs_apply(request, queryset.order_by().values_list("id", flat=True), verb=verb, call=call)

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[RunnerJob]) -> None:
        self._apply_to_selection(
            request, queryset, verb="Cancelled", call=_cancel, action=OperationAction.CANCEL
        )

    @admin.action(description="Retry selected jobs", permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[RunnerJob]) -> None:
        self._apply_to_selection(
            request, queryset, verb="Retried", call=_retry, action=OperationAction.RETRY
        )

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
            path(
                "<uuid:object_id>/retry-with-changes/",
                wrap(self.retry_with_changes),
                name="runner_jobs_runnerjob_retry_with_changes",
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

    def retry_with_changes(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        """A staff form: retry a failed or cancelled job with another payload, priority, tags or
        metadata, through ``job_retry`` like the API's retry with a body."""
        if not self.can_act(request):
            raise PermissionDenied
        job = get_object_or_404(RunnerJob, pk=object_id)
        form = RetryChangesForm(request.POST or None, job=job)
        if request.method == "POST" and form.is_valid():
            try:
                new = services.job_retry(
                    job_id=job.pk,
                    actor=staff_actor(request),
                    created_by=cast(User, request.user),
                    changes=form.cleaned_data,
                )
            except services.JobInputError as exc:
                for name, errors in exc.errors.items():
                    form.add_error(name if name in form.fields else None, errors)
            except services.JobServiceError as exc:
                form.add_error(None, exc.detail)
            else:
                messages.success(request, f"Retried as {str(new.pk)[:8]}.")
                return HttpResponseRedirect(job_admin_url(new.pk))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Retry {job} with changes",
            "opts": self.model._meta,
            "original": job,
            "form": form,
            "retryable": job.status in RETRYABLE_STATUSES and not job.retries.exists(),
        }
        return TemplateResponse(
            request, "admin/runner_jobs/runnerjob/retry_with_changes.html", context
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: RunnerJob | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["explanation"] = job_explain(obj)
        if obj is not None and self.can_act(request):
            context["can_cancel"] = obj.status in ACTIVE_STATUSES
            context["can_retry"] = obj.status in RETRYABLE_STATUSES and not obj.retries.exists()
            context["retry_with_changes_url"] = reverse(
                "admin:runner_jobs_runnerjob_retry_with_changes", args=[obj.pk]
            )
        return super().render_change_form(request, context, add, change, form_url, obj)


class RetryChangesForm(forms.Form):
    """What a retry may change, filled in with the job's current values. Shapes only: the rules
    (payload size, tag pattern, metadata limits) are the service's, shown on the fields."""

    # Not required: ``{}`` counts as empty to a form field, and is a valid payload.
    payload = forms.JSONField(required=False, help_text="A JSON object.")
    priority = forms.IntegerField(min_value=0, max_value=9)
    tags = forms.CharField(
        required=False, strip=False, help_text="Comma-separated, e.g. env:prod,nightly."
    )
    metadata = forms.JSONField(
        required=False,
        help_text=f"A JSON object of strings (values at most {METADATA_VALUE_MAX_LENGTH} chars).",
    )

    def __init__(self, *args: Any, job: RunnerJob, **kwargs: Any) -> None:
        initial = {
            "payload": job.payload,
            "priority": job.priority,
            "tags": ",".join(job.tags),
            "metadata": job.metadata,
        }
        kwargs["initial"] = initial
        super().__init__(*args, **kwargs)

    def clean_tags(self) -> list[str]:
        text: str = self.cleaned_data["tags"]
        return [tag for tag in text.split(",") if tag] if text else []

    def clean_payload(self) -> Any:
        return _empty_object_if_none(self.cleaned_data["payload"])

    def clean_metadata(self) -> Any:
        return _empty_object_if_none(self.cleaned_data["metadata"])


def _empty_object_if_none(value: Any) -> Any:
    return {} if value is None else value


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


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Bulk operations (the API's and the changelist's "select all" actions): their counts as
    they move, and a button to cancel a running one."""

    list_display = [
        "short_id",
        "action",
        "status_badge",
        "workspace",
        "matched",
        "succeeded",
        "skipped",
        "failed",
        "actor",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "action"]
    list_select_related = ["workspace"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    fields = OPERATION_PAGE_FIELDS = (
        "id",
        "action",
        "status_badge",
        "workspace",
        "filter",
        "progress_display",
        "matched",
        "succeeded",
        "skipped",
        "failed",
        "actor",
        "created_by",
        "created_at",
        "progressed_at",
        "finished_at",
    )
    readonly_fields = OPERATION_PAGE_FIELDS

    class Media:
        css = {"all": ["runner_jobs/admin.css"]}

    @admin.display(description="id", ordering="id")
    def short_id(self, operation: Operation) -> str:
        return str(operation.id)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, operation: Operation) -> SafeString:
        return status_badge(operation.status)

    @admin.display(description="progress")
    def progress_display(self, operation: Operation) -> SafeString:
        percent = 100 if not operation.matched else operation.done * 100 // operation.matched
        return format_html(
            "{} <span>{} of {} jobs</span>",
            progress_bar(percent),
            operation.done,
            operation.matched,
        )

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<uuid:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_button),
                name="runner_jobs_operation_cancel",
            ),
        ]
        return custom + super().get_urls()

    def can_cancel(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runner_jobs.change_runnerjob")

    def cancel_button(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.can_cancel(request):
            raise PermissionDenied
        try:
            services.operation_cancel(operation_id=object_id)
        except services.JobServiceError as exc:
            messages.warning(request, exc.detail)
        else:
            messages.success(request, "Cancelled the operation; no further batch starts.")
        return HttpResponseRedirect(operation_admin_url(object_id))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Operation | None = None,
    ) -> HttpResponse:
        running = obj is not None and obj.status == OperationStatus.RUNNING
        context["running"] = running
        context["can_cancel"] = running and self.can_cancel(request)
        return super().render_change_form(request, context, add, change, form_url, obj)


# Schedules, workers and job type policies (their own module, registered on import).
from runner_jobs import admin_operators  # noqa: E402, F401
