"""Maps service-layer errors onto HTTP, the same way for every API (consumer and coordinator).

Errors are ``{"detail": "...", "code": "..."}``; bad input found by a domain rule is DRF's
field-error object with status 400, like a serializer's."""

from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

from runner_jobs.services import JobInputError, JobServiceError


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, JobInputError):
        return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, JobServiceError):
        return Response({"detail": exc.detail, "code": exc.code}, status=exc.status_code)
    response = exception_handler(exc, context)
    if (
        response is not None
        and isinstance(exc, APIException)
        and isinstance(response.data, dict)
        and set(response.data) == {"detail"}
    ):
        codes = exc.get_codes()
        response.data["code"] = codes if isinstance(codes, str) else "error"
    return response
