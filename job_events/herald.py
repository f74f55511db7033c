"""The herald: webhook endpoints, and the signed delivery of events to them.

Every write here goes through these functions: the API and the admin make and remove endpoints
with them. An event's deliveries are rows of the outbox (``PendingDelivery``), written in the
event's own transaction and handed to the broker after commit; the Celery task
``webhook_deliver_task`` (on the ``webhooks`` queue) makes each attempt through
``webhook_deliver``, one at a time per endpoint, and logs it as one ``WebhookDelivery`` row; the
outbox sweep sends again what the broker never got. See docs/decisions/0051 and 0080.
"""

import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Greatest, Now
from django.utils import timezone
from kombu.exceptions import OperationalError
from redis.exceptions import LockError
from rest_framework.renderers import JSONRenderer
from urllib3.exceptions import HTTPError

from config.celery import app as celery_app
from config.redis_client import redis_client
from job_events.models import PendingDelivery, WebhookDelivery, WebhookEndpoint
from job_events.outbound import AddressRefusedError, webhook_post
from job_events.selectors import webhook_endpoints_active
from runner_jobs import metrics
from runner_jobs.events import event_type_matches
from runner_jobs.models import JobEvent
from runner_jobs.serializers import JobEventSerializer, RunnerJobSerializer
from workspaces.models import Workspace

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "X-Runner-Signature"
# Kept in the log: enough of a failing endpoint's answer to see why, not a whole page.
ERROR_BODY_CHARS = 500
USER_AGENT = "runner-jobs-webhooks/1"
DELIVER_TASK_NAME = "job_events.deliver_webhook"
# One attempt's time limits (the delivery task's): the timeout bounds connecting and each wait
# for the answer; the soft limit ends an endpoint that trickles its answer byte by byte.
DELIVERY_SOFT_TIME_LIMIT_SECONDS = 3 * settings.RUNNER_WEBHOOK_TIMEOUT_SECONDS + 2
DELIVERY_TIME_LIMIT_SECONDS = DELIVERY_SOFT_TIME_LIMIT_SECONDS + 5
# One attempt at a time per endpoint: a Redis lock that outlives the longest attempt (so a
# killed worker's lock expires on its own, and two attempts never overlap).
ENDPOINT_LOCK_KEY = "runner_jobs:webhook-endpoint:{}"
ENDPOINT_LOCK_SECONDS = DELIVERY_TIME_LIMIT_SECONDS + 1
# A delivery that finds its endpoint busy is tried again after this (up to twice as long, so
# waiting deliveries spread out); the worker is free meanwhile.
ENDPOINT_BUSY_RETRY_SECONDS = 1.0
# A delivery's message that arrives this much before its due time (another host's clock) is
# still taken as due; one that comes earlier is a duplicate and does nothing.
DUE_TOLERANCE_SECONDS = 1.0
OUTBOX_BATCH_SIZE = 200
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
    """Register an endpoint with a new random secret (the caller shows it once). Raises Django's
    ``ValidationError`` for a URL deliveries may not reach or a workspace with the most endpoints
    allowed; the workspace's row lock makes that count exact under concurrent creates."""
    with transaction.atomic():
        Workspace.objects.select_for_update().get(pk=workspace.pk)
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


def webhook_deliveries_record(*, events: list[JobEvent], workspace_id: int) -> list[int]:
    """Inside the events' transaction: one pending delivery (outbox row) per event and active
    endpoint of the workspace that wants it, in one INSERT. Returns their ids; no statement when
    no endpoint wants any."""
    endpoints = webhook_endpoints_memoized(workspace_id)
    wanted = [
        (event, endpoint)
        for event in events
        for endpoint in endpoints
        if event_type_matches(endpoint.event_types, event.type)
    ]
    if not wanted:
        return []
    now = timezone.now()
    resend_at = now + timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS)
    rows = PendingDelivery.objects.bulk_create(
        PendingDelivery(endpoint=endpoint, event=event, due_at=now, resend_at=resend_at)
        for event, endpoint in wanted
    )
    return [row.pk for row in rows]


def _publish(pending_id: int, countdown: float = 0) -> None:
    """Hand a delivery's message to the broker (the ``webhooks`` queue, by the task routes);
    kombu's ``OperationalError`` when the broker refuses it. By name: the task module imports
    this one."""
    celery_app.signature(DELIVER_TASK_NAME, args=[pending_id]).apply_async(countdown=countdown)


def webhook_deliveries_publish(pending_ids: list[int]) -> int:
    """After commit: hand each delivery to the broker. At the first refusal the rest are marked
    for the next outbox sweep (the broker is down: the others would be refused too). Returns
    how many were handed over."""
    for sent, pending_id in enumerate(pending_ids):
        try:
            _publish(pending_id)
        except OperationalError as exc:
            PendingDelivery.objects.filter(pk__in=pending_ids[sent:]).update(resend_at=Now())
            logger.warning("webhook deliveries wait for the outbox sweep: %s", exc)
            return sent
    return len(pending_ids)


def webhook_outbox_sweep() -> int:
    """Send again the deliveries whose ``resend_at`` has passed (the hand-over failed, or the
    message was lost with a Redis restart), ``OUTBOX_BATCH_SIZE`` per transaction, until none is
    left or the broker refuses one. Rows are locked ``SKIP LOCKED``: two sweeps send each once.
    Returns how many were sent."""
    sent = 0
    resend_after = timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS)
    while True:
        with transaction.atomic():
            now = timezone.now()
            batch = list(
                PendingDelivery.objects.filter(resend_at__lte=now)
                .select_for_update(skip_locked=True)
                .order_by("resend_at")
                .only("pk", "due_at")[:OUTBOX_BATCH_SIZE]
            )
            handed: list[int] = []
            try:
                for pending in batch:
                    _publish(pending.pk, countdown=max(0.0, (pending.due_at - now).total_seconds()))
                    handed.append(pending.pk)
            except OperationalError as exc:
                logger.warning("outbox sweep: broker down, sending nothing more: %s", exc)
                batch = []
            PendingDelivery.objects.filter(pk__in=handed).update(
                resend_at=Greatest("due_at", Value(now)) + resend_after
            )
        sent += len(handed)
        if len(batch) < OUTBOX_BATCH_SIZE:
            return sent


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
        status_code, answer = webhook_post(
            endpoint.url,
            body=body,
            headers=headers,
            timeout=settings.RUNNER_WEBHOOK_TIMEOUT_SECONDS,
            read_limit=ERROR_BODY_CHARS * 4,
        )
    except (HTTPError, AddressRefusedError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:ERROR_BODY_CHARS]
    except SoftTimeLimitExceeded:
        return None, f"Timeout: no whole answer within {DELIVERY_SOFT_TIME_LIMIT_SECONDS:g} s"
    if 200 <= status_code < 300:
        return status_code, ""
    text = answer.decode(errors="replace")
    return status_code, f"HTTP {status_code}: {text}"[:ERROR_BODY_CHARS]


def _due(pending: PendingDelivery) -> bool:
    return pending.due_at <= timezone.now() + timedelta(seconds=DUE_TOLERANCE_SECONDS)


def webhook_deliver(*, pending_id: int) -> float | None:
    """Make the next attempt of pending delivery ``pending_id`` and log it, unless another
    attempt holds its endpoint. Returns the delay before the task should run again (the next
    attempt's backoff, or a busy endpoint's wait), or None when there is nothing more to do
    (delivered, given up, the endpoint gone or paused, or a duplicate message)."""
    pending = PendingDelivery.objects.select_related("endpoint").filter(pk=pending_id).first()
    if pending is None or not _due(pending):
        return None
    if not pending.endpoint.is_active:
        pending.delete()
        return None
    lock = redis_client().lock(
        ENDPOINT_LOCK_KEY.format(pending.endpoint_id), timeout=ENDPOINT_LOCK_SECONDS
    )
    if not lock.acquire(blocking=False):
        return ENDPOINT_BUSY_RETRY_SECONDS * random.uniform(1, 2)
    try:
        return _attempt(pending_id)
    finally:
        with suppress(LockError):  # expired meanwhile: nothing left to release
            lock.release()


def _attempt(pending_id: int) -> float | None:
    """One attempt, under its endpoint's lock; the row is read again, as a duplicate message
    may have made this attempt while we waited for the lock."""
    pending = (
        PendingDelivery.objects.select_related(
            "endpoint", "event__job__workspace", "event__job__created_by"
        )
        .filter(pk=pending_id)
        .first()
    )
    if pending is None or not _due(pending):
        return None
    attempt = pending.attempts + 1
    started = time.monotonic()
    status_code, error = _post(pending.endpoint, webhook_body(pending.event))
    latency_ms = int((time.monotonic() - started) * 1000)
    succeeded = not error
    delay = None
    if not succeeded and attempt < settings.RUNNER_WEBHOOK_MAX_ATTEMPTS:
        delay = webhook_retry_delay(attempt)
    now = timezone.now()
    next_attempt_at = now + timedelta(seconds=delay) if delay is not None else None
    with transaction.atomic():
        WebhookDelivery.objects.create(
            endpoint=pending.endpoint,
            event=pending.event,
            attempt=attempt,
            succeeded=succeeded,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            next_attempt_at=next_attempt_at,
        )
        rows = PendingDelivery.objects.filter(pk=pending.pk)
        if next_attempt_at is None:
            rows.delete()
        else:
            resend_after = timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS)
            rows.update(
                attempts=attempt, due_at=next_attempt_at, resend_at=next_attempt_at + resend_after
            )
    metrics.webhook_delivery_observed(succeeded=succeeded, will_retry=delay is not None)
    return delay
