"""An admin paginator that never counts millions of rows.

The changelist asks its paginator for ``count`` on every page load. A plain ``COUNT(*)`` visits
every matching row, so with a million jobs (or ten million events) it alone costs seconds. Here:

* unfiltered: PostgreSQL's own estimate of the table size (``pg_class.reltuples``, kept by
  autovacuum/ANALYZE);
* filtered: an exact count, but of at most ``EXACT_COUNT_LIMIT + 1`` rows; past that the
  planner's row estimate for the filtered query.

An estimate is shown where an exact figure would cost a full scan; paging still works, and a page
past the real end is simply empty. See docs/decisions/0040-admin-at-scale.md.
"""

import json
from functools import cached_property

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet

EXACT_COUNT_LIMIT = 1_000


def table_row_estimate(db_table: str) -> int:
    """PostgreSQL's estimate of a table's row count; -1 when the table was never analyzed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [db_table]
        )
        row = cursor.fetchone()
    assert row is not None  # a regclass always has its pg_class row
    return int(row[0])


def query_row_estimate(queryset: QuerySet) -> int:
    """The planner's estimate of how many rows ``queryset`` returns (no rows are read)."""
    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def estimated_count(queryset: QuerySet) -> int:
    """Exact up to ``EXACT_COUNT_LIMIT`` rows; past that, PostgreSQL's estimate."""
    if not queryset.query.where:
        estimate = table_row_estimate(queryset.model._meta.db_table)
        if estimate > EXACT_COUNT_LIMIT:
            return estimate
    capped = queryset.order_by()[: EXACT_COUNT_LIMIT + 1].count()
    if capped <= EXACT_COUNT_LIMIT:
        return capped
    return max(query_row_estimate(queryset), capped)


class EstimatedCountPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return estimated_count(self.object_list)
        return super().count
