"""Reads of webhook endpoints for the herald."""

from functools import cache

from django.db import connection

from config.rows import model_columns, model_from_row
from job_events.models import WebhookEndpoint


@cache
def _endpoints_active_sql() -> str:
    """Built once per process (every write reads it): as ``WebhookEndpoint.objects.filter(
    workspace_id=..., is_active=True)``, in the model's ordering."""
    meta = WebhookEndpoint._meta
    workspace = meta.get_field("workspace").column
    is_active = meta.get_field("is_active").column
    created_at = meta.get_field("created_at").column
    table = f'"{meta.db_table}"'  # no alias: the SQL reads as the ORM's would
    return (
        f"SELECT {', '.join(model_columns(WebhookEndpoint, table))} FROM {table} "
        f'WHERE {table}."{workspace}" = %s AND {table}."{is_active}" '
        f'ORDER BY {table}."{created_at}" DESC, {table}."{meta.pk.column}" DESC'
    )


def webhook_endpoints_active(*, workspace_id: int) -> list[WebhookEndpoint]:
    """The active endpoints of a workspace (one query; usually none)."""
    with connection.cursor() as cursor:
        cursor.execute(_endpoints_active_sql(), [workspace_id])
        return [model_from_row(WebhookEndpoint, row) for row in cursor.fetchall()]
