from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from .models import CoordinatorKey

# The library's own APIKey model authenticates nothing here; listing it next to coordinator keys
# would invite staff to make keys that never work.
admin.site.unregister(APIKey)


@admin.register(CoordinatorKey)
class CoordinatorKeyAdmin(APIKeyModelAdmin):
    """Make (the key is shown once, in a message), scope and revoke coordinator keys."""

    # The library types these as tuples of exactly its own length.
    list_display = ("prefix", "name", "scope", "created", "expiry_date", "_has_expired", "revoked")  # type: ignore[assignment]
    list_filter = ("revoked", "created")  # type: ignore[assignment]
    filter_horizontal = ("workspaces",)
    actions = ["revoke_keys"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CoordinatorKey]:
        return super().get_queryset(request).prefetch_related("workspaces")

    @admin.display(description="Workspaces")
    def scope(self, key: CoordinatorKey) -> str:
        return ", ".join(w.slug for w in key.workspaces.all()) or "all"

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[CoordinatorKey]) -> None:
        revoked = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
