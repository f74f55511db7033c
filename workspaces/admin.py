from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from knox.admin import AuthTokenAdmin as KnoxAuthTokenAdmin
from knox.models import AuthToken

from .models import Membership, Workspace


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role"]
    list_filter = ["role", "workspace"]
    list_select_related = ["user", "workspace"]
    autocomplete_fields = ["user", "workspace"]


admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class ApiTokenAdmin(KnoxAuthTokenAdmin):
    """knox's token admin without the digest: the list shows the token's public prefix, and a
    new token is shown once, in the message after creating it (knox's add form). Revoking is
    the only change."""

    list_display = ["token_key", "user", "created", "expiry"]
    list_display_links = None
    search_fields = ["token_key", "user__username"]
    list_select_related = ["user"]
    actions = ["revoke_selected"]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        # Django's delete confirmation page would print each token's digest.
        actions.pop("delete_selected", None)
        return actions

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A token's own page would title itself with its digest; the list says all there is.
        return obj is None and super().has_view_permission(request)

    def save_model(self, request: HttpRequest, obj: AuthToken, form: Any, change: bool) -> None:
        obj.save()
        self.message_user(
            request,
            f"New token for {obj.user}: {form.token} (copy it now: it is not shown again).",
            messages.SUCCESS,
        )

    def response_add(
        self, request: HttpRequest, obj: AuthToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        # Django's "was added" message would print the token's digest (its __str__).
        return HttpResponseRedirect(reverse("admin:knox_authtoken_changelist"))

    @admin.action(description="Revoke selected tokens", permissions=["delete"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[AuthToken]) -> None:
        revoked, _ = queryset.delete()
        self.message_user(request, f"Revoked {revoked} tokens.", messages.SUCCESS)
