"""Cursor pagination for jobs (newest first) and events (oldest first): no COUNT(*), and pages
stay stable while new rows arrive."""

from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class _TimestampCursorPagination(CursorPagination):
    """Both orderings start with a timestamp. A cursor that does not decode, or whose position
    is not a timestamp, is the client's mistake: a 400, never a 500 from the database."""

    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    page_size_query_description = f"Results per page, at most {MAX_PAGE_SIZE}."

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            cursor = super().decode_cursor(request)
            # parse_datetime: None for a non-date, ValueError for an impossible one.
            position = cursor.position if cursor is not None else None
            if position is not None and parse_datetime(str(position)) is None:
                raise ValueError(position)
        except (NotFound, ValueError) as exc:
            raise ValidationError({"cursor": ["Invalid cursor."]}, code="invalid_cursor") from exc
        return cursor

    def get_page_size(self, request: Request) -> int:
        """``page_size`` from 1 up (larger than the maximum gives the maximum); empty or absent
        gives the default. Anything else is a 400, not silently the default."""
        raw = request.query_params.get(self.page_size_query_param, "")
        if raw == "":
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if size < 1:
            raise ValidationError(
                {self.page_size_query_param: ["Must be a whole number of at least 1."]},
                code="invalid",
            )
        return min(size, self.max_page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["allowEmptyValue"] = True
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        response_schema: dict[str, Any] = super().get_paginated_response_schema(schema)
        # The schema DRF writes marks next/previous nullable but not required; they always are.
        response_schema["required"] = ["next", "previous", "results"]
        return response_schema


class JobCursorPagination(_TimestampCursorPagination):
    ordering = ("-created_at", "-id")


class EventCursorPagination(_TimestampCursorPagination):
    ordering = ("timestamp", "id")
