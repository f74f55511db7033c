from django.contrib import admin

from .models import JobStep, RunnerJob


@admin.register(RunnerJob)
class RunnerJobAdmin(admin.ModelAdmin):
    """Read-only: every change to a job goes through ``runner_jobs.services``."""

    list_display = ["id", "type", "status", "progress", "workspace", "attempts", "created_at"]
    list_filter = ["status", "type"]
    list_select_related = ["workspace"]
    search_fields = ["=id", "=agent_task_id"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(JobStep)
class JobStepAdmin(admin.ModelAdmin):
    list_display = ["job", "ordinal", "name", "phase", "status", "duration_ms"]
    list_select_related = ["job"]
    raw_id_fields = ["job"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
