"""The live event stream of a job (Server-Sent Events) and the webhooks API."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from job_events import herald
from job_events.models import WebhookEndpoint
from job_events.notify import stream_wakeups
from job_events.readers import stream_db
from job_events.serializers import (
    WebhookEndpointCreatedSerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
)
from runner_jobs.selectors import job_events_after, jobs_for_user
from runner_jobs.serializers import JobEventSerializer
from workspaces.authentication import TokenAuthentication
from workspaces.models import Membership
from workspaces.selectors import workspaces_for_user

# Events read per query; a stream that is far behind catches up in batches of this size.
STREAM_BATCH_SIZE = 500
# How long a new stream waits for its process's Redis subscription before its first read, so
# that a ring sent right after that read is heard.
SUBSCRIBE_WAIT_SECONDS = 1.0
KEEPALIVE = b": keep-alive\n\n"


def _error(status: int, code: str, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


def _stream_open_check(*, request: HttpRequest, job_id: uuid.UUID) -> JsonResponse | None:
    """The same rules as the job endpoint: a knox token or a session (401 without), and the job
    must be in one of the user's workspaces (404 otherwise)."""
    user: Any
    try:
        authenticated = TokenAuthentication().authenticate(request)
    except AuthenticationFailed as exc:
        return _error(401, "authentication_failed", str(exc.detail))
    user = authenticated[0] if authenticated else request.user
    if not user.is_authenticated:
        return _error(401, "not_authenticated", "Authentication credentials were not provided.")
    if not jobs_for_user(user).filter(pk=job_id).exists():
        return _error(404, "not_found", "No such job.")
    return None


def _stream_read(*, job_id: uuid.UUID, after: int) -> tuple[list[tuple[int, bytes]], bool]:
    """The next batch as SSE frames with their ids, and whether the job had ended."""
    batch = job_events_after(job_id=job_id, after=after, limit=STREAM_BATCH_SIZE)
    renderer = JSONRenderer()
    frames = [
        (
            event.pk,
            b"id: %d\nevent: %s\ndata: %s\n\n"
            % (event.pk, event.type.encode(), renderer.render(JobEventSerializer(event).data)),
        )
        for event in batch.events
    ]
    # Fewer than a full batch from an ended job: its terminal event has been read too.
    ended = batch.job_ended and len(frames) < STREAM_BATCH_SIZE
    return frames, ended


async def _event_stream(
    job_id: uuid.UUID, after: int, *, keepalive: float, poll: float
) -> AsyncIterator[bytes]:
    wakeups = stream_wakeups()
    async with wakeups.waiter(job_id) as wakeup:
        with suppress(TimeoutError):
            await asyncio.wait_for(wakeups.subscribed.wait(), SUBSCRIBE_WAIT_SECONDS)
        last_write = time.monotonic()
        while True:
            # Cleared before the read: a ring during the read makes the next wait return at once.
            wakeup.clear()
            frames, ended = await stream_db(_stream_read, job_id=job_id, after=after)
            for event_id, frame in frames:
                yield frame
                after = event_id
            if frames:
                last_write = time.monotonic()
            if ended:
                return
            if len(frames) == STREAM_BATCH_SIZE:
                continue
            # Wait for a ring, or the slow poll; keep-alives meanwhile cost no database read.
            read_at = time.monotonic() + poll
            while not wakeup.is_set() and time.monotonic() < read_at:
                timeout = min(read_at, last_write + keepalive) - time.monotonic()
                with suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), max(0.0, timeout))
                if time.monotonic() - last_write >= keepalive:
                    yield KEEPALIVE
                    last_write = time.monotonic()


def _resume_after(request: HttpRequest) -> int | None:
    """The id to resume after: ``Last-Event-ID`` (a reconnecting browser sends it), else
    ``?after=``, else 0 (from the first event); None when the value is not an event id."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 19:
        return None
    return int(raw)


# Token-authenticated and read-only: exempt from CSRF so a POST gets its 405, not a 403.
@csrf_exempt
async def job_event_stream(request: HttpRequest, pk: uuid.UUID) -> HttpResponseBase:
    """``GET /api/v1/runner-jobs/{id}/events/stream/``: the job's events as Server-Sent Events,
    from the first (or after ``Last-Event-ID`` / ``?after=``) until the job's terminal event.

    An async view, served by the ASGI web tier: an open stream costs a coroutine, not a thread
    (docs/decisions/0050-serving-streams.md).
    """
    if request.method != "GET":
        return _error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
    refused = await stream_db(_stream_open_check, request=request, job_id=pk)
    if refused is not None:
        return refused
    after = _resume_after(request)
    if after is None:
        return _error(400, "invalid", "Last-Event-ID and after must be an event id (an integer).")
    response = StreamingHttpResponse(
        _event_stream(
            pk,
            after,
            keepalive=settings.RUNNER_STREAM_KEEPALIVE_SECONDS,
            poll=settings.RUNNER_STREAM_POLL_SECONDS,
        ),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    # Tells nginx-style proxies not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


class WebhookEndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[WebhookEndpoint],
):
    """``/api/v1/webhooks/``: a workspace admin's endpoints. The secret is in the create
    response only."""

    queryset = WebhookEndpoint.objects.none()

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        admin_of = workspaces_for_user(self.request.user, roles=(Membership.Role.ADMIN,))
        return WebhookEndpoint.objects.filter(workspace__in=admin_of).select_related("workspace")

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "create":
            return WebhookEndpointCreateSerializer
        return WebhookEndpointSerializer

    @extend_schema(responses={201: WebhookEndpointCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workspace = serializer.validated_data["workspace"]
        user: User = request.user  # type: ignore[assignment]
        admin_of = workspaces_for_user(user, roles=(Membership.Role.ADMIN,))
        if not admin_of.filter(pk=workspace.pk).exists():
            raise PermissionDenied("Only the workspace's admins manage its webhooks.")
        endpoint = herald.webhook_endpoint_create(
            workspace=workspace,
            url=serializer.validated_data["url"],
            event_types=serializer.validated_data["event_types"],
            created_by=user,
        )
        return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=201)

    def perform_destroy(self, instance: WebhookEndpoint) -> None:
        herald.webhook_endpoint_delete(endpoint=instance)
