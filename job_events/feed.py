"""The workspace event feed: every job event of a workspace, as Server-Sent Events
(``/api/v1/events/stream/``) and as pages (``/api/v1/events/``).

The order. Event ids come from a sequence at INSERT, and transactions on different jobs commit
in another order, so "id > last seen" would skip an event whose transaction commits a moment
after a higher id's. Each event therefore records the id of the transaction that inserted it
(``JobEvent.xid``, a column default), and the feed serves only events whose transaction is older
than the oldest transaction still running (``pg_snapshot_xmin(pg_current_snapshot())``): those
have all committed (or rolled back), and no event can ever again appear below that horizon. In
(xid, id) order, a cursor at (xid, id) therefore never skips and never repeats. Writers are not
serialised: nothing is locked or counted at write time. See docs/decisions/0100-workspace-feed.md.

The cursor is ``"<xid>.<id>"``: the SSE ``id:`` of each event, its ``cursor`` field, and what
``Last-Event-ID`` or ``?after=`` take back. A bare event id is accepted too (resolved to its
position), and ``0`` or nothing means "from the first event".
"""

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db.models import F, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.db.models.lookups import GreaterThan, GreaterThanOrEqual, LessThan
from django.http import HttpRequest, JsonResponse, QueryDict, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from job_events.notify import EVERY_JOB, stream_wakeups
from job_events.readers import stream_db
from job_events.sse import (
    KEEPALIVE,
    SUBSCRIBE_WAIT_SECONDS,
    AccessChecks,
    stream_request_refusal,
)
from job_events.stream_access import (
    StreamAccess,
    refusal,
    stream_authenticate,
    too_many_streams,
)
from runner_jobs.events import EVENT_TYPE_MAX_LENGTH, EVENT_TYPE_PATTERN, EVERY_TYPE
from runner_jobs.models import FEED_XID, JobEvent, TransactionIdField
from runner_jobs.serializers import ErrorSerializer, JobEventSerializer
from workspaces.selectors import workspaces_for_user

FEED_BATCH_SIZE = 500
PAGE_SIZE_DEFAULT = 100
# A ring wakes every feed of the process (it names a job, not a workspace): each feed reads at
# most this often, however many events are written.
FEED_MIN_READ_INTERVAL_SECONDS = 0.1
# While an event is held back behind a running transaction (which may write no event, so rings
# nothing when it ends), re-read after this long, doubling up to the maximum.
HELD_BACK_POLL_SECONDS = 0.05
HELD_BACK_POLL_MAX_SECONDS = 1.0
QUERY_PARAMETERS = frozenset({"workspace", "type", "job_type", "after", "page_size"})
CURSOR = re.compile(r"(\d{1,20})\.(\d{1,19})")
JOB_TYPE_MAX_LENGTH = 64
# PostgreSQL's bigint and xid8 ranges: a larger number in a cursor is a 400, not a 500.
MAX_EVENT_ID = 2**63 - 1
MAX_XID = 2**64 - 1


@dataclass(frozen=True, order=True)
class FeedPosition:
    """Where an event sits in the feed: (transaction id, event id). Events older than the xid
    column have transaction 0."""

    xid: int
    id: int

    def __str__(self) -> str:
        return f"{self.xid}.{self.id}"


FEED_START = FeedPosition(0, 0)


@dataclass(frozen=True)
class FeedQuery:
    workspace_id: int
    types: tuple[str, ...] = ()
    job_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedBatch:
    events: list[JobEvent]
    # An event of this feed past the cursor is visible but not yet served: a transaction older
    # than it is still running. The reader should look again soon.
    held_back: bool = False


@dataclass
class FeedRequest:
    query: FeedQuery
    after: FeedPosition
    page_size: int = PAGE_SIZE_DEFAULT
    errors: dict[str, list[str]] = field(default_factory=dict)


def _type_filter(patterns: Iterable[str]) -> Q:
    """The SQL twin of ``runner_jobs.events.event_type_matches`` (tests check they agree)."""
    condition = Q()
    for pattern in patterns:
        if pattern == EVERY_TYPE:
            return Q()
        if pattern.endswith(".*"):
            condition |= Q(type__startswith=pattern[:-1])
        else:
            condition |= Q(type=pattern)
    return condition


def _feed_events(query: FeedQuery) -> QuerySet[JobEvent]:
    events = JobEvent.objects.annotate(feed_xid=FEED_XID, job_type=F("job__type")).filter(
        job__workspace_id=query.workspace_id
    )
    if query.types:
        events = events.filter(_type_filter(query.types))
    if query.job_types:
        events = events.filter(job__type__in=query.job_types)
    return events


def _xid(value: int) -> Value:
    return Value(value, output_field=TransactionIdField())


def _after(events: QuerySet[JobEvent], position: FeedPosition) -> QuerySet[JobEvent]:
    # (xid, id) > position, written so the index walk starts at position.xid.
    return events.filter(GreaterThanOrEqual(FEED_XID, _xid(position.xid))).filter(
        Q(GreaterThan(FEED_XID, _xid(position.xid))) | Q(id__gt=position.id)
    )


def workspace_events_after(*, query: FeedQuery, after: FeedPosition, limit: int) -> FeedBatch:
    """Up to ``limit`` events of the feed after ``after``, in feed order, all of them final:
    inserted by transactions older than every transaction still running."""
    horizon = RawSQL("pg_snapshot_xmin(pg_current_snapshot())", [])
    candidates = _after(_feed_events(query), after)
    events = list(candidates.filter(LessThan(FEED_XID, horizon)).order_by(FEED_XID, "id")[:limit])
    held_back = False
    if len(events) < limit:
        # Read after the batch, so its horizon is at least the batch's: nothing is missed.
        held_back = candidates.filter(GreaterThanOrEqual(FEED_XID, horizon)).exists()
    return FeedBatch(events=events, held_back=held_back)


def feed_position(event: JobEvent) -> FeedPosition:
    """The position of an event read by ``workspace_events_after``."""
    return FeedPosition(event.feed_xid, event.pk)  # type: ignore[attr-defined]


class FeedEventSerializer(JobEventSerializer):
    """A job event in the feed: the job's event, its job's type, and its cursor."""

    job_type = serializers.CharField(read_only=True)
    cursor = serializers.SerializerMethodField(
        help_text="The feed position of this event: pass it as `after` or `Last-Event-ID`."
    )

    class Meta(JobEventSerializer.Meta):
        fields = [*JobEventSerializer.Meta.fields, "job_type", "cursor"]
        read_only_fields = fields

    def get_cursor(self, event: JobEvent) -> str:
        return str(feed_position(event))


class FeedPageSerializer(serializers.Serializer[Any]):
    """For the schema only: a page of the feed."""

    results = FeedEventSerializer(many=True)
    after = serializers.CharField(help_text="The cursor to pass as `after` for the next page.")
    next = serializers.URLField(help_text="The next page's URL (empty until more events commit).")


def _position(raw: str, *, workspace_id: int) -> FeedPosition | None:
    """A cursor, a bare event id of this workspace, or "0"; None when it is none of these."""
    raw = raw.strip()
    match = CURSOR.fullmatch(raw)
    if match:
        xid, event_id = int(match[1]), int(match[2])
        return FeedPosition(xid, event_id) if xid <= MAX_XID and event_id <= MAX_EVENT_ID else None
    if not raw.isdigit() or len(raw) > 19:
        return None
    if int(raw) == 0:
        return FEED_START
    event = (
        JobEvent.objects.annotate(feed_xid=FEED_XID)
        .filter(pk=int(raw), job__workspace_id=workspace_id)
        .first()
    )
    return feed_position(event) if event is not None else None


def feed_request(
    *, user: AbstractBaseUser | AnonymousUser, params: QueryDict, last_event_id: str | None
) -> FeedRequest:
    """The feed a request asks for, from its query string (and ``Last-Event-ID``). Field errors
    in ``errors``; ``NotFound`` when the workspace is not one of ``user``'s."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(params) - QUERY_PARAMETERS)
    if unknown:
        errors["non_field_errors"] = [f"Unknown query parameter: {', '.join(unknown)}."]
    slug = params.get("workspace", "")
    if not slug:
        errors["workspace"] = ["This parameter is required."]
    types = tuple(params.getlist("type"))
    if any(len(t) > EVENT_TYPE_MAX_LENGTH or not EVENT_TYPE_PATTERN.fullmatch(t) for t in types):
        errors["type"] = ['Each type is an event type, a prefix like "job.*", or "*".']
    job_types = tuple(params.getlist("job_type"))
    if any(not t or len(t) > JOB_TYPE_MAX_LENGTH for t in job_types):
        errors["job_type"] = [f"Each job type is 1 to {JOB_TYPE_MAX_LENGTH} characters."]
    page_size = PAGE_SIZE_DEFAULT
    raw_size = params.get("page_size", "")
    if raw_size:
        if raw_size.isdigit() and int(raw_size) >= 1:
            page_size = min(int(raw_size), FEED_BATCH_SIZE)
        else:
            errors["page_size"] = ["Must be a whole number of at least 1."]
    if errors:
        return FeedRequest(FeedQuery(0), FEED_START, errors=errors)
    workspace = workspaces_for_user(user).filter(slug=slug).first()
    if workspace is None:
        raise NotFound("No such workspace among yours.")
    query = FeedQuery(workspace.pk, types, job_types)
    raw_after = last_event_id or params.get("after") or "0"
    after = _position(raw_after, workspace_id=workspace.pk)
    if after is None:
        errors["after"] = [
            "Must be a cursor from this feed (<xid>.<id>), an event id of this workspace, or 0."
        ]
        return FeedRequest(query, FEED_START, errors=errors)
    return FeedRequest(query, after, page_size)


# --- Pages -------------------------------------------------------------------------------------


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


FEED_PARAMETERS = [
    OpenApiParameter("workspace", OpenApiTypes.STR, required=True, description="Workspace slug."),
    OpenApiParameter(
        "type",
        OpenApiTypes.STR,
        many=True,
        description='Event types (repeatable): exact, a prefix like "job.*", or "*".',
    ),
    OpenApiParameter(
        "job_type", OpenApiTypes.STR, many=True, description="Job types (repeatable)."
    ),
    OpenApiParameter(
        "after",
        OpenApiTypes.STR,
        description="A cursor of this feed, an event id of the workspace, or 0 (the default).",
    ),
]
FEED_ERRORS = {
    400: OpenApiResponse(
        response={"type": "object", "additionalProperties": True},
        description="Bad query: DRF's field-error object.",
    ),
    401: _error("No valid `Authorization: Token <token>` (or session)."),
    404: _error("No such workspace among yours."),
}


class WorkspaceEventListView(APIView):
    """``GET /api/v1/events/``: the workspace feed as pages, oldest first."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["events"],
        parameters=[
            *FEED_PARAMETERS,
            OpenApiParameter(
                "page_size", OpenApiTypes.INT, description=f"1 to {FEED_BATCH_SIZE}, default 100."
            ),
        ],
        responses={200: FeedPageSerializer, **FEED_ERRORS},
    )
    def get(self, request: Request) -> Response:
        feed = feed_request(user=request.user, params=request.query_params, last_event_id=None)
        if feed.errors:
            raise ValidationError(feed.errors)
        batch = workspace_events_after(query=feed.query, after=feed.after, limit=feed.page_size)
        after = feed_position(batch.events[-1]) if batch.events else feed.after
        return Response(
            {
                "results": FeedEventSerializer(batch.events, many=True).data,
                "after": str(after),
                "next": replace_query_param(request.build_absolute_uri(), "after", str(after)),
            }
        )


# --- Server-Sent Events ------------------------------------------------------------------------


def _stream_open(request: HttpRequest) -> tuple[StreamAccess, FeedRequest] | HttpResponseBase:
    """The job stream's rules and order (``job_events.sse``): credentials (401; a job's read
    token reads its job only, so it is refused here), the query (400) and the workspace among
    the reader's (404), then a slot in the credential's stream cap (429)."""
    slug = request.GET.get("workspace", "")

    def readable(user: User) -> bool:
        return workspaces_for_user(user).filter(slug=slug).exists()

    access = stream_authenticate(request, readable=readable)
    if not isinstance(access, StreamAccess):
        return access
    try:
        feed = feed_request(
            user=access.user,
            params=request.GET,
            last_event_id=request.headers.get("Last-Event-ID"),
        )
    except NotFound as exc:
        return refusal(404, "not_found", str(exc.detail))
    if feed.errors:
        return JsonResponse(feed.errors, status=400)
    if not access.acquire_slot():
        return too_many_streams()
    return access, feed


def _stream_read(
    *, query: FeedQuery, after: FeedPosition
) -> tuple[list[tuple[FeedPosition, bytes]], bool]:
    batch = workspace_events_after(query=query, after=after, limit=FEED_BATCH_SIZE)
    renderer = JSONRenderer()
    frames = []
    for event in batch.events:
        position = feed_position(event)
        data = renderer.render(FeedEventSerializer(event).data)
        frames.append(
            (
                position,
                b"id: %s\nevent: %s\ndata: %s\n\n"
                % (str(position).encode(), event.type.encode(), data),
            )
        )
    return frames, batch.held_back


async def _feed_stream(
    query: FeedQuery, after: FeedPosition, *, access: StreamAccess
) -> AsyncIterator[bytes]:
    keepalive = float(settings.RUNNER_STREAM_KEEPALIVE_SECONDS)
    poll = float(settings.RUNNER_STREAM_POLL_SECONDS)
    try:
        async for chunk in _feed_frames(
            query, after, access=access, keepalive=keepalive, poll=poll
        ):
            yield chunk
    finally:
        await stream_db(access.release_slot)


async def _feed_frames(
    query: FeedQuery, after: FeedPosition, *, access: StreamAccess, keepalive: float, poll: float
) -> AsyncIterator[bytes]:
    wakeups = stream_wakeups()
    async with wakeups.waiter(EVERY_JOB) as wakeup:
        yield b"retry: %d\n\n" % settings.RUNNER_STREAM_RETRY_MS
        with suppress(TimeoutError):
            await asyncio.wait_for(wakeups.subscribed.wait(), SUBSCRIBE_WAIT_SECONDS)
        checks = AccessChecks(access, every=keepalive)
        last_write = time.monotonic()
        held_back_wait = HELD_BACK_POLL_SECONDS
        while True:
            # Cleared before the read: a ring during the read makes the next wait return at once.
            wakeup.clear()
            read_at = time.monotonic()
            frames, held_back = await stream_db(_stream_read, query=query, after=after)
            for position, frame in frames:
                yield frame
                after = position
            if frames:
                last_write = time.monotonic()
            if await checks.lost():
                return
            if len(frames) == FEED_BATCH_SIZE:
                continue
            if held_back:
                wait, held_back_wait = (
                    held_back_wait,
                    min(2 * held_back_wait, HELD_BACK_POLL_MAX_SECONDS),
                )
            else:
                wait, held_back_wait = poll, HELD_BACK_POLL_SECONDS
            # Wait for a ring or the poll; keep-alives meanwhile cost no database read.
            next_read = read_at + wait
            while not wakeup.is_set() and time.monotonic() < next_read:
                timeout = min(next_read, last_write + keepalive, checks.next_at) - time.monotonic()
                with suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), max(0.0, timeout))
                if await checks.lost():
                    return
                if time.monotonic() - last_write >= keepalive:
                    yield KEEPALIVE
                    last_write = time.monotonic()
            await asyncio.sleep(
                max(0.0, read_at + FEED_MIN_READ_INTERVAL_SECONDS - time.monotonic())
            )


# Token-authenticated and read-only: exempt from CSRF so a POST gets its 405, not a 403.
@csrf_exempt
async def workspace_event_stream(request: HttpRequest) -> HttpResponseBase:
    """``GET /api/v1/events/stream/?workspace=<slug>``: every event of the workspace's jobs as
    Server-Sent Events, from the first (or after ``Last-Event-ID`` / ``?after=``), never closed
    by the server. An async view on the ASGI web tier, like the job stream."""
    if refused := stream_request_refusal(request):
        return refused
    opened = await stream_db(_stream_open, request=request)
    if isinstance(opened, HttpResponseBase):
        return opened
    access, feed = opened
    response = StreamingHttpResponse(
        _feed_stream(feed.query, feed.after, access=access),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
