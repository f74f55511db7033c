from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from .models import CoordinatorKey

# The library's own APIKey model authenticates nothing here; listing it next to coordinator keys
# would invite staff to make keys that never work.
admin.site.unregister(APIKey)


class CoordinatorKeyForm(forms.ModelForm):
    """A key's scope is said outright: every workspace, or a list of at least one."""

    class Meta:
        model = CoordinatorKey
        fields = ["name", "revoked", "expiry_date", "all_workspaces", "workspaces"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        everywhere, listed = data.get("all_workspaces"), data.get("workspaces")
        if everywhere and listed:
            raise forms.ValidationError(
                "A key for every workspace lists none: untick it or clear the workspaces."
            )
        if not everywhere and not listed and "workspaces" not in self.errors:
            self.add_error(
                "workspaces", "Choose the workspaces this key may touch, or tick every workspace."
            )
        return data


@admin.register(CoordinatorKey)
class CoordinatorKeyAdmin(APIKeyModelAdmin):
    """Make (the key is shown once, in a message), scope and revoke coordinator keys."""

    form = CoordinatorKeyForm

    # The library types these as tuples of exactly its own length.
    list_display = ("prefix", "name", "scope", "created", "expiry_date", "_has_expired", "revoked")  # type: ignore[assignment]
    list_filter = ("revoked", "all_workspaces", "created")  # type: ignore[assignment]
    filter_horizontal = ("workspaces",)
    actions = ["revoke_keys"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CoordinatorKey]:
        return super().get_queryset(request).prefetch_related("workspaces")

    @admin.display(description="Workspaces")
    def scope(self, key: CoordinatorKey) -> str:
        if key.all_workspaces:
            return "all"
        return ", ".join(w.slug for w in key.workspaces.all()) or "none (sees nothing)"

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[CoordinatorKey]) -> None:
        revoked = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
