"""Refusals made before any view runs, so a malformed request costs no work and writes nothing:
a body over the limit (413, before a byte of it is read), a body without a length (411), a NUL
in the URL (400: PostgreSQL cannot compare text with one), and a header the API reads that is
not text (401 for a credential, 400 otherwise). On the way out, an error under /api/ that is
not JSON (a debug page) becomes the API's error body."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.errors import error_response, is_api, status_error_response, throttled_response
from config.throttling import anonymous_quota_spend

# Headers whose value the API reads. A server hands them over as latin-1 text (WSGI and ASGI
# alike), so a byte that is not UTF-8 arrives as a character nobody meant. A credential header
# maps to the challenge of its 401 (the scheme DRF's authentication classes announce).
CREDENTIAL_HEADERS = {"Authorization": "Token", "X-API-Key": "X-API-Key"}
TEXT_HEADERS = ("Idempotency-Key", "If-Match", "Last-Event-ID")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def header_text(raw: str) -> str | None:
    """The header value as the client wrote it (UTF-8), or None when it is not printable text:
    bytes that are not UTF-8, or control characters (a NUL never reaches PostgreSQL)."""
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
    return text if text.strip(" \t").isprintable() else None


class RequestGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refusal = (
            self._body_refusal(request)
            or self._url_refusal(request)
            or self._header_refusal(request)
        )
        if refusal is not None:
            return refusal
        return self._api_error_as_json(request, self.get_response(request))

    def _api_error_as_json(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        """An error under /api/ that is not JSON becomes the API's error body: with ``DEBUG`` on,
        Django answers an unmatched URL or an unexpected fault with its debug pages (the error
        handlers are not asked), and neither a client nor a log reader needs them there."""
        if (
            response.status_code < 400
            or not is_api(request)
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        return status_error_response(response.status_code)

    def _body_refusal(self, request: HttpRequest) -> HttpResponse | None:
        raw_length = request.META.get("CONTENT_LENGTH") or ""
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if raw_length:
            if not (raw_length.isascii() and raw_length.isdigit()):
                return error_response(400, "bad_request", "Content-Length must be a number.")
            if limit is not None and int(raw_length) > limit:
                return error_response(
                    413, "request_too_large", f"The request body is over {limit} bytes."
                )
        elif (
            request.method in BODY_METHODS
            and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            # Django reads a body only as long as its Content-Length (a chunked one would be read
            # as empty, silently): say so rather than act on a body we never saw.
            return error_response(
                411, "length_required", "Send the body with a Content-Length, not chunked."
            )
        return None

    def _url_refusal(self, request: HttpRequest) -> HttpResponse | None:
        query = (item for key, values in request.GET.lists() for item in (key, *values))
        if "\x00" in request.path or any("\x00" in item for item in query):
            return error_response(400, "bad_request", "The URL must not contain U+0000 (NUL).")
        return None

    def _header_refusal(self, request: HttpRequest) -> HttpResponse | None:
        if not is_api(request):
            return None
        for name, challenge in CREDENTIAL_HEADERS.items():
            raw = request.headers.get(name)
            if raw is not None and header_text(raw) is None:
                retry_after = anonymous_quota_spend(request)
                if retry_after is not None:
                    return throttled_response(retry_after)
                return error_response(
                    401, "authentication_failed", f"Invalid {name} header.", challenge=challenge
                )
        for name in TEXT_HEADERS:
            raw = request.headers.get(name)
            if raw is not None and header_text(raw) is None:
                # The shape of the views' own header refusals: a field error named after it.
                return JsonResponse({name: ["Must be printable UTF-8 text."]}, status=400)
        return None
