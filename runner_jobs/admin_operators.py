"""Staff pages for schedules, workers and job type policies. Read-only like the job pages: a
schedule changes only through ``runner_jobs.services.schedules`` (the actions below, or the API);
workers are written by their heartbeats; a job type policy's form and its pause/resume actions
call ``runner_jobs.services.policies``, as the API does."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from runner_jobs.admin_readonly import ReadOnlyAdminMixin, staff_actor
from runner_jobs.models import JobTypePolicy, Schedule, Worker
from runner_jobs.registry import job_types
from runner_jobs.services.policies import job_type_policy_update
from runner_jobs.services.schedules import schedule_trigger, schedule_update
from runner_jobs.workers import workers_list


@admin.register(Schedule)
class ScheduleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "workspace",
        "timing",
        "timezone",
        "overlap",
        "paused",
        "next_run_at",
        "last_run_at",
    ]
    list_filter = ["paused", "overlap", "workspace"]
    search_fields = ["name", "workspace__slug"]
    list_select_related = ["workspace"]
    ordering = ["workspace__slug", "name"]
    actions = ["run_now", "pause", "resume"]

    @admin.display(description="when")
    def timing(self, schedule: Schedule) -> str:
        return schedule.cron or f"every {schedule.interval_seconds} s"

    @admin.action(description="Run selected schedules now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        jobs = [schedule_trigger(schedule_id=pk) for pk in queryset.values_list("pk", flat=True)]
        self.message_user(
            request,
            ngettext("Made %d job.", "Made %d jobs.", len(jobs)) % len(jobs),
            messages.SUCCESS,
        )

    @admin.action(description="Pause selected schedules")
    def pause(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_paused(request, queryset, paused=True)

    @admin.action(description="Resume selected schedules")
    def resume(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_paused(request, queryset, paused=False)

    def _set_paused(
        self, request: HttpRequest, queryset: QuerySet[Schedule], *, paused: bool
    ) -> None:
        for pk in queryset.values_list("pk", flat=True):
            schedule_update(schedule_id=pk, paused=paused)
        self.message_user(request, "Paused." if paused else "Resumed.", messages.SUCCESS)


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "hostname",
        "pid",
        "alive",
        "started_at",
        "last_seen_at",
        "running",
    ]
    list_filter = ["kind"]
    search_fields = ["name", "hostname"]
    ordering = ["kind", "name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        # The same answer as GET /api/v1/workers/ (two queries for the whole page).
        self._states = {state.worker.pk: state for state in workers_list()}
        return super().get_queryset(request)

    @admin.display(boolean=True)
    def alive(self, worker: Worker) -> bool:
        return self._states[worker.pk].alive if worker.pk in self._states else False

    @admin.display(description="running jobs")
    def running(self, worker: Worker) -> SafeString:
        state = self._states.get(worker.pk)
        job_ids = state.running if state else []
        if not job_ids:
            return format_html("{}", "-")
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:runner_jobs_runnerjob_change", args=[pk]), pk[:8]) for pk in job_ids),
        )


class JobTypePolicyForm(forms.ModelForm):
    type = forms.ChoiceField(choices=())

    class Meta:
        model = JobTypePolicy
        fields = ["workspace", "type", "paused", "max_running"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "type" in self.fields:
            self.fields["type"].choices = [(name, name) for name in sorted(job_types())]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.pk is None and not data.get("paused") and data.get("max_running") is None:
            raise forms.ValidationError("Pause the type or set max_running (else it is no policy).")
        return data


@admin.register(JobTypePolicy)
class JobTypePolicyAdmin(admin.ModelAdmin):
    """A workspace's policy for a job type. Saved through the service (its bells ring on a
    resume or a raised cap); never deleted here (resume and clear max_running instead)."""

    form = JobTypePolicyForm
    list_display = ["workspace", "type", "paused", "max_running", "updated_by", "updated_at"]
    list_filter = ["paused", "type", "workspace"]
    search_fields = ["type", "workspace__slug"]
    list_select_related = ["workspace"]
    ordering = ["workspace__slug", "type"]
    actions = ["pause", "resume"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        kept = ("workspace", "type") if obj is not None else ()
        return (*kept, "updated_by", "updated_at")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: JobTypePolicy, form: Any, change: bool) -> None:
        saved = job_type_policy_update(
            workspace=obj.workspace,
            type=obj.type,
            actor=staff_actor(request),
            paused=obj.paused,
            max_running=obj.max_running,
        )
        obj.pk, obj.updated_by, obj.updated_at = saved.pk, saved.updated_by, saved.updated_at

    @admin.action(description="Pause selected job types", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[JobTypePolicy]) -> None:
        self._set_paused(request, queryset, paused=True)

    @admin.action(description="Resume selected job types", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[JobTypePolicy]) -> None:
        self._set_paused(request, queryset, paused=False)

    def _set_paused(
        self, request: HttpRequest, queryset: QuerySet[JobTypePolicy], *, paused: bool
    ) -> None:
        policies = list(queryset.select_related("workspace"))
        for policy in policies:
            job_type_policy_update(
                workspace=policy.workspace,
                type=policy.type,
                actor=staff_actor(request),
                paused=paused,
            )
        verb = "Paused" if paused else "Resumed"
        self.message_user(
            request,
            ngettext("%s %d job type.", "%s %d job types.", len(policies)) % (verb, len(policies)),
            messages.SUCCESS,
        )
