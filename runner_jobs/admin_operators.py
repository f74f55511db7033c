"""Staff pages for schedules and workers. Read-only like the job pages: a schedule changes only
through ``runner_jobs.services.schedules`` (the actions below, or the API); workers are written
by their heartbeats."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from runner_jobs.admin_readonly import ReadOnlyAdminMixin
from runner_jobs.models import Schedule, Worker
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
