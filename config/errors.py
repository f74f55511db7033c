"""Error answers that no view writes: Django's own 400, 403, 404 and 500 pages.

Under ``/api/`` they are the API's JSON error, ``{"detail", "code"}``, like every other refusal
(a client parses JSON, never an HTML page); elsewhere (the admin) Django's pages stay. In
production mode (``DEBUG`` off) a 500 never shows a traceback; and should ``DEBUG`` be on, the
debug page hides every setting that may name a host or hold a credential."""

import math
import re
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import debug, defaults

API_PREFIX = "/api/"


def error_response(
    status: int, code: str, detail: str, *, challenge: str = "Token"
) -> JsonResponse:
    """The API's error body; a 401 says which credential it wants (``WWW-Authenticate``), as
    DRF's do."""
    response = JsonResponse({"detail": detail, "code": code}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = challenge
    return response


def throttled_response(retry_after: float) -> JsonResponse:
    """A 429 in DRF's words, with the seconds to wait in ``Retry-After``."""
    seconds = math.ceil(retry_after)
    response = error_response(
        429, "throttled", f"Request was throttled. Expected available in {seconds} seconds."
    )
    response["Retry-After"] = str(seconds)
    return response


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


# Django's own error answers in the API's words (DRF's codes for the same statuses).
STATUS_ERRORS = {
    400: ("bad_request", "The request is malformed."),
    403: ("permission_denied", "Not allowed."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    500: ("server_error", "Internal server error."),
}


def status_error_response(status: int) -> JsonResponse:
    """The API's error body for an answer Django made with only a status."""
    code, detail = STATUS_ERRORS.get(status, ("error", f"{HTTPStatus(status).phrase}."))
    return error_response(status, code, detail)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler400``: a request Django itself refused (a ``SuspiciousOperation``, a bad Host)."""
    if is_api(request):
        return status_error_response(400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler403``."""
    if is_api(request):
        return status_error_response(403)
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404``: a URL under /api/ that matches no route."""
    if is_api(request):
        return status_error_response(404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: the error itself is in the log (with the request id), never in the
    answer."""
    if is_api(request):
        return status_error_response(500)
    return defaults.server_error(request)


class SettingsHidingFilter(debug.SafeExceptionReporterFilter):
    """Django's filter hides settings named like secrets; this one also hides every setting that
    names where a service lives (``REDIS_URL``, ``CELERY_BROKER_URL``, ``DATABASES``...), whose
    values may carry a password and always map the network."""

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|DATABASE|BROKER|REDIS|HOST|DSN",
        flags=re.IGNORECASE,
    )
