from django.contrib import admin

from .models import JobEvent


@admin.register(JobEvent)
class JobEventAdmin(admin.ModelAdmin):
    list_display = ["id", "job", "type", "actor", "timestamp"]
    list_filter = ["type"]
    raw_id_fields = ["job", "step"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
