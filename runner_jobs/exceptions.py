"""Maps service-layer errors onto HTTP, the same way for every API (consumer and coordinator).

Errors are ``{"detail": "...", "code": "..."}``; bad input found by a domain rule is DRF's
field-error object with status 400, like a serializer's. A request refused for want of a valid
credential counts against its address's quota (``RUNNER_ANON_QUOTA``): past it, 429."""

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.throttling import anonymous_quota_spend
from runner_jobs.errors import DuplicateJobError, JobInputError, JobServiceError
from runner_jobs.serializers import RunnerJobSerializer


def _as_api_exception(exc: Exception, context: dict[str, Any]) -> Exception:
    """Django's own exceptions as DRF's (which carry a code), and a 401 past the address's
    quota as a 429."""
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        retry_after = anonymous_quota_spend(context["request"])
        if retry_after is not None:
            return exceptions.Throttled(wait=retry_after)
    return exc


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, JobInputError):
        return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DuplicateJobError):
        body = {"detail": exc.detail, "code": exc.code, "job": RunnerJobSerializer(exc.job).data}
        return Response(body, status=exc.status_code)
    if isinstance(exc, JobServiceError):
        return Response({"detail": exc.detail, "code": exc.code}, status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        # Django would answer with an HTML 400; an API answers in JSON, with the precise status.
        detail = f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        return Response(
            {"detail": detail, "code": "request_too_large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    exc = _as_api_exception(exc, context)
    response = exception_handler(exc, context)
    if (
        response is not None
        and isinstance(exc, exceptions.APIException)
        and isinstance(response.data, dict)
        and set(response.data) == {"detail"}
    ):
        codes = exc.get_codes()
        response.data["code"] = codes if isinstance(codes, str) else "error"
    return response
