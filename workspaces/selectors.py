"""Who may see and change what: every API queryset is scoped through these."""

from functools import cache

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import QuerySet

from config.rows import model_columns, model_from_row

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


@cache
def _membership_for_slug_sql() -> str:
    """Built once per process: a membership's columns, then its workspace's, by user and slug."""
    membership, workspace = Membership._meta, Workspace._meta
    columns = model_columns(Membership, "m") + model_columns(Workspace, "w")
    return (
        f'SELECT {", ".join(columns)} FROM "{membership.db_table}" m '
        f'JOIN "{workspace.db_table}" w '
        f'ON w."{workspace.pk.column}" = m."{membership.get_field("workspace").column}" '
        f'WHERE m."{membership.get_field("user").column}" = %s '
        f'AND w."{workspace.get_field("slug").column}" = %s'
    )


def membership_for_slug(user: AbstractBaseUser | AnonymousUser, slug: str) -> Membership | None:
    """``user``'s membership of the workspace ``slug``, with the workspace, in one query built
    once per process (a create asks on every request); None when not a member (or no such
    workspace)."""
    if not user.is_authenticated:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_membership_for_slug_sql(), [user.pk, slug])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(Membership._meta.concrete_fields)
    membership = model_from_row(Membership, row[:split])
    membership.workspace = model_from_row(Workspace, row[split:])
    return membership
