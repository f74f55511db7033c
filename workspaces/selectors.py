"""Who may see and change what: every API queryset is scoped through these."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from .models import Membership, Workspace

WRITE_ROLES = (Membership.Role.MEMBER, Membership.Role.ADMIN)


def workspaces_for_user(
    user: AbstractBaseUser | AnonymousUser, *, roles: tuple[str, ...] | None = None
) -> QuerySet[Workspace]:
    """The workspaces ``user`` is a member of (with one of ``roles``, when given)."""
    if not user.is_authenticated:
        return Workspace.objects.none()
    memberships = Membership.objects.filter(user_id=user.pk)
    if roles is not None:
        memberships = memberships.filter(role__in=roles)
    return Workspace.objects.filter(pk__in=memberships.values("workspace_id"))


def membership_role(user: AbstractBaseUser | AnonymousUser, workspace_id: int) -> str | None:
    """``user``'s role in the workspace, or None when not a member."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(user_id=user.pk, workspace_id=workspace_id)
        .values_list("role", flat=True)
        .first()
    )


def membership_for_slug(user: AbstractBaseUser | AnonymousUser, slug: str) -> Membership | None:
    """``user``'s membership of the workspace ``slug``, with the workspace, in one query; None
    when not a member (or no such workspace)."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(user_id=user.pk, workspace__slug=slug)
        .select_related("workspace")
        .first()
    )
