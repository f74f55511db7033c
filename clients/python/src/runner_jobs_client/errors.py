"""Exceptions: one class per API error ``code``, so callers catch what they mean.

Every refusal of the API is ``{"detail": "...", "code": "..."}`` (or, for 400, a field-error
object); :func:`error_from_response` turns it into the matching :class:`ApiError` subclass.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx

from runner_jobs_client.models import Job


class RunnerJobsError(Exception):
    """Base of every exception this package raises."""


class ApiError(RunnerJobsError):
    """The API refused a request. ``status`` is the HTTP status, ``code`` the API's error code
    (``"error"`` when the answer named none), ``detail`` its message, ``body`` the whole answer."""

    def __init__(self, status: int, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class ValidationError(ApiError):
    """400: bad input. ``errors`` holds DRF's field errors (``{"field": ["message", ...]}``)."""

    @property
    def errors(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


class AuthenticationFailed(ApiError):
    """401: no valid token (consumer API) or API key (coordinator API)."""


class PermissionDenied(ApiError):
    """403: authenticated, but the role does not allow it (e.g. a viewer's write)."""


class NotFound(ApiError):
    """404: no such job, or one outside your workspaces (its existence is not revealed)."""


class Conflict(ApiError):
    """409 with a code this package does not know by name."""


class InvalidTransition(Conflict):
    """409 ``invalid_transition``: the job's state does not allow the move (e.g. cancel a
    completed job)."""


class ConcurrentUpdate(Conflict):
    """409 ``concurrent_update``: others kept changing the job; read it again and decide."""


class StaleLease(Conflict):
    """409 ``stale_lease``: the lease this report carries is no longer the job's (it expired and
    the job went to someone else, or the job ended). Stop working on the job."""


class DuplicateJob(Conflict):
    """409 ``duplicate_job``: a live job with the same ``unique_key`` exists; it is ``job``."""

    @property
    def job(self) -> Job | None:
        """The live job that holds the key."""
        data = self.body.get("job") if isinstance(self.body, dict) else None
        return Job(data) if isinstance(data, dict) else None


class PreconditionFailed(ApiError):
    """412: ``If-Match`` named an older version of the job."""


class IdempotencyConflict(ApiError):
    """422 ``idempotency_conflict``: the ``Idempotency-Key`` was used with a different body."""


class RetryableError(ApiError):
    """An answer worth trying again later; ``retry_after`` is the server's ``Retry-After`` in
    seconds (None when it sent none). Raised once the client's retries are used up."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, detail, body)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """429: over the quota (``RUNNER_API_QUOTA``) of this token or key."""


class ServiceUnavailable(RetryableError):
    """503: the database or the broker is down for a moment."""


class WaitTimeout(RunnerJobsError, TimeoutError):
    """``wait()`` or ``follow()`` ran past its timeout; ``job`` is the job as last seen (if
    read)."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job


BY_CODE: dict[str, type[ApiError]] = {
    "invalid_transition": InvalidTransition,
    "concurrent_update": ConcurrentUpdate,
    "stale_lease": StaleLease,
    "duplicate_job": DuplicateJob,
    "precondition_failed": PreconditionFailed,
    "idempotency_conflict": IdempotencyConflict,
    "not_found": NotFound,
    "throttled": RateLimited,
}
BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    422: IdempotencyConflict,
    429: RateLimited,
    503: ServiceUnavailable,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds from now: either form of the header (delta-seconds or an HTTP
    date); None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - time.time())


def error_from_response(response: httpx.Response) -> ApiError:
    """The exception for a refused request: by the body's ``code``, else by the status."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    code = body.get("code") if isinstance(body, dict) else None
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(code, str):
        code = "invalid" if response.status_code == 400 else "error"
    if not isinstance(detail, str):
        # A field-error object says more than a status line; a page (HTML from a proxy, or
        # Django's debug page) does not.
        detail = json.dumps(body)[:500] if isinstance(body, dict | list) else response.reason_phrase
    cls = BY_CODE.get(code) or BY_STATUS.get(response.status_code, ApiError)
    if issubclass(cls, RetryableError):
        return cls(response.status_code, code, detail, body, retry_after_seconds(response))
    return cls(response.status_code, code, detail, body)
