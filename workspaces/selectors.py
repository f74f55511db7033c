"""Who may see and change what: every API queryset is scoped through these."""

from collections.abc import Sequence
from functools import cache
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Model, QuerySet

from .models import Membership, Workspace

WRITE_ROLES = (Membership.Role.MEMBER, Membership.Role.ADMIN)

M = TypeVar("M", bound=Model)


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
    columns = [f'm."{f.column}"' for f in membership.concrete_fields]
    columns += [f'w."{f.column}"' for f in workspace.concrete_fields]
    return (
        f'SELECT {", ".join(columns)} FROM "{membership.db_table}" m '
        f'JOIN "{workspace.db_table}" w '
        f'ON w."{workspace.pk.column}" = m."{membership.get_field("workspace").column}" '
        f'WHERE m."{membership.get_field("user").column}" = %s '
        f'AND w."{workspace.get_field("slug").column}" = %s'
    )


def _from_row(model: type[M], values: Sequence[Any]) -> M:
    fields = model._meta.concrete_fields
    return model.from_db(
        connection.alias,
        [f.attname for f in fields],
        [
            field.from_db_value(value, None, connection)
            if hasattr(field, "from_db_value")
            else value
            for field, value in zip(fields, values, strict=True)
        ],
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
    membership = _from_row(Membership, row[:split])
    membership.workspace = _from_row(Workspace, row[split:])
    return membership
