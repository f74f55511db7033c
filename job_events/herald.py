"""The herald: webhook endpoints, and the signed delivery of events to them.

Every write here goes through these functions: the API and the admin make and remove endpoints
with them, and the Celery task ``webhook_deliver_task`` makes each attempt through
``webhook_deliver``, which logs it as one ``WebhookDelivery`` row.
"""

import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta

import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from job_events.models import WebhookDelivery, WebhookEndpoint
from job_events.selectors import webhook_endpoints_active
from runner_jobs import metrics
from runner_jobs.models import JobEvent
from runner_jobs.serializers import JobEventSerializer, RunnerJobSerializer
from workspaces.models import Workspace

SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "X-Runner-Signature"
# Kept in the log: enough of a failing endpoint's answer to see why, not a whole page.
ERROR_BODY_CHARS = 500
USER_AGENT = "runner-jobs-webhooks/1"
# How long a request or task reuses a workspace's endpoints once read: the longest an endpoint
# made or changed meanwhile waits to take effect for that writer's later events.
ENDPOINTS_MEMO_SECONDS = 1.0

# Per workspace: when its active endpoints were read and what they were; None outside a
# ``webhook_endpoints_memo`` block, where every event reads them afresh.
_endpoints_memo: ContextVar[dict[int, tuple[float, list[WebhookEndpoint]]] | None] = ContextVar(
    "webhook_endpoints_memo", default=None
)


def webhook_secret_new() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def webhook_endpoint_create(
    *,
    workspace: Workspace,
    url: str,
    event_types: list[str],
    created_by: User | None = None,
) -> WebhookEndpoint:
    """Register an endpoint with a new random secret (the caller shows it once)."""
    endpoint = WebhookEndpoint(
        workspace=workspace,
        url=url,
        event_types=event_types,
        secret=webhook_secret_new(),
        created_by=created_by,
    )
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Remove an endpoint and its delivery log; deliveries already queued for it are dropped."""
    endpoint.delete()


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The header value: ``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def webhook_retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): exponential, with up to 25%
    jitter so endpoints that failed together are not retried together; capped."""
    base = settings.RUNNER_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1)
    return float(min(base * random.uniform(1, 1.25), settings.RUNNER_WEBHOOK_BACKOFF_MAX_SECONDS))


@contextmanager
def webhook_endpoints_memo() -> Iterator[None]:
    """Within this block (a request, a Celery task), read each workspace's active endpoints at
    most once per ``ENDPOINTS_MEMO_SECONDS`` instead of once per event (docs/decisions/0051)."""
    token = _endpoints_memo.set({})
    try:
        yield
    finally:
        _endpoints_memo.reset(token)


def webhook_endpoints_memoized(workspace_id: int) -> list[WebhookEndpoint]:
    memo = _endpoints_memo.get()
    if memo is None:
        return webhook_endpoints_active(workspace_id=workspace_id)
    now = time.monotonic()
    read = memo.get(workspace_id)
    if read is None or now - read[0] >= ENDPOINTS_MEMO_SECONDS:
        read = (now, webhook_endpoints_active(workspace_id=workspace_id))
        memo[workspace_id] = read
    return read[1]


def webhook_body(event: JobEvent) -> bytes:
    """The JSON POSTed for ``event``: ``{"event": <event>, "job": <job as it is now>}``."""
    return JSONRenderer().render(
        {
            "event": JobEventSerializer(event).data,
            "job": RunnerJobSerializer(event.job).data,
        }
    )


def _post(endpoint: WebhookEndpoint, body: bytes) -> tuple[int | None, str]:
    """POST once; the status code (None when no answer came) and an error ("" on a 2xx)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: webhook_signature(
            secret=endpoint.secret, timestamp=int(time.time()), body=body
        ),
    }
    try:
        response = requests.post(
            endpoint.url,
            data=body,
            headers=headers,
            timeout=settings.RUNNER_WEBHOOK_TIMEOUT_SECONDS,
            # A redirect is the endpoint's answer, not an invitation to POST elsewhere.
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:ERROR_BODY_CHARS]
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, f"HTTP {response.status_code}: {response.text}"[:ERROR_BODY_CHARS]


def webhook_deliver(*, endpoint_id: int, event_id: int, attempt: int) -> float | None:
    """Make delivery attempt number ``attempt`` and log it. Returns the delay before the next
    attempt, or None when there is none (delivered, given up, or the endpoint is gone)."""
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=True).first()
    event = (
        JobEvent.objects.select_related("job__workspace", "job__created_by")
        .filter(pk=event_id)
        .first()
    )
    if endpoint is None or event is None:
        return None
    body = webhook_body(event)
    started = time.monotonic()
    status_code, error = _post(endpoint, body)
    latency_ms = int((time.monotonic() - started) * 1000)
    succeeded = not error
    delay = None
    if not succeeded and attempt < settings.RUNNER_WEBHOOK_MAX_ATTEMPTS:
        delay = webhook_retry_delay(attempt)
    WebhookDelivery.objects.create(
        endpoint=endpoint,
        event=event,
        attempt=attempt,
        succeeded=succeeded,
        status_code=status_code,
        latency_ms=latency_ms,
        error=error,
        next_attempt_at=timezone.now() + timedelta(seconds=delay) if delay is not None else None,
    )
    metrics.webhook_delivery_observed(succeeded=succeeded, will_retry=delay is not None)
    return delay
