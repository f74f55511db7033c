"""Admin pages to look at, never to edit: what the services alone write (steps, events,
operations, schedules' and workers' pages, whose actions go through the services); and the actor
those actions name."""

from typing import Any

from django.http import HttpRequest


class ReadOnlyAdminMixin:
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def staff_actor(request: HttpRequest) -> str:
    """The actor of a change made in the admin: ``staff:<username>``."""
    return f"staff:{request.user.get_username()}"
