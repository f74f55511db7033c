"""Server-Sent Events as browsers' ``EventSource`` and our clients read them, for every stream.

A stream is a cursor over committed events (``read(after)``, run on the stream reader threads)
woken by the Redis doorbell (``notify.py``). This module holds what does not depend on what is
streamed: the resume cursor, the frames, the loop with its keep-alives and access checks, and
the response. Behaviour under ``EventSource``:

* every event carries ``id:``, so a reconnect sends ``Last-Event-ID`` and resumes exactly;
* the first bytes are ``retry: RUNNER_STREAM_RETRY_MS``: the reconnect delay after a dropped
  connection (a deploy), the same in every browser (their defaults differ, 3 to 5 s);
* a comment every ``RUNNER_STREAM_KEEPALIVE_SECONDS`` of silence keeps proxies from closing it;
* a stream that has nothing more to say, ever (a finished job, read to the end), answers
  **204** instead of opening: ``EventSource`` treats that as final and stops reconnecting.
"""

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from rest_framework.renderers import JSONRenderer

from job_events.notify import stream_wakeups
from job_events.readers import stream_db
from job_events.stream_access import (
    StreamAccess,
    refusal,
    stream_authenticate,
    too_many_streams,
)

KEEPALIVE = b": keep-alive\n\n"
# How long a new stream waits for its process's Redis subscription before its first read, so
# that a ring sent right after that read is heard.
SUBSCRIBE_WAIT_SECONDS = 1.0
# An event id: ASCII digits only (``str.isdigit`` also takes "¹", which ``int`` refuses, and
# "٣", which it quietly reads as 3), at most 19 of them (a PostgreSQL bigint).
_EVENT_ID = re.compile(r"[0-9]{1,19}")
_BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class Batch:
    """One read of a stream: its frames as ``(event id, bytes)``, whether more are waiting
    already (a full batch), and whether the stream has ended (nothing will ever follow)."""

    frames: list[tuple[int, bytes]]
    more: bool = False
    ended: bool = False


def sse_frame(event_id: int, event_type: str, data: object) -> tuple[int, bytes]:
    """One event as an SSE frame: ``id``, ``event`` and ``data`` (JSON, one line)."""
    body = JSONRenderer().render(data)
    return event_id, b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode(), body)


def resume_after(request: HttpRequest) -> int | None:
    """The event id to resume after: ``Last-Event-ID`` (a reconnecting browser sends it), else
    ``?after=``, else 0 (from the first event); None when the value is not an event id."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    raw = raw.strip()
    if not _EVENT_ID.fullmatch(raw) or int(raw) > _BIGINT_MAX:
        return None
    return int(raw)


def has_body(request: HttpRequest) -> bool:
    """Did the client declare a body? (The ASGI entry point never reads it; see config/asgi.py.)"""
    length = request.META.get("CONTENT_LENGTH") or "0"
    return length.strip() != "0" or "HTTP_TRANSFER_ENCODING" in request.META


class AccessChecks:
    """An open stream's re-checks of its reader's access, at most ``every`` seconds apart."""

    def __init__(self, access: StreamAccess, *, every: float) -> None:
        self.access = access
        self.every = every
        self.next_at = time.monotonic() + every

    async def lost(self) -> bool:
        """Check again if it is time; True once the credential or the access is gone."""
        if time.monotonic() < self.next_at:
            return False
        if not await stream_db(self.access.still_valid):
            return True
        self.next_at = time.monotonic() + self.every
        return False


def stream_request_refusal(request: HttpRequest) -> HttpResponseBase | None:
    """What a stream answers before opening: 405 for any method but GET, 413 for a request that
    declares a body (never read); None when the request may open a stream."""
    if request.method != "GET":
        refused = refusal(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
        refused["Allow"] = "GET"
        return refused
    if has_body(request):
        return refusal(413, "request_too_large", "A stream request takes no body.")
    return None


async def _events(
    *,
    first: Batch,
    read: Callable[..., Batch],
    after: int,
    wakeup_key: str,
    access: StreamAccess,
) -> AsyncIterator[bytes]:
    keepalive = float(settings.RUNNER_STREAM_KEEPALIVE_SECONDS)
    poll = float(settings.RUNNER_STREAM_POLL_SECONDS)
    wakeups = stream_wakeups()
    try:
        async with wakeups.waiter(wakeup_key) as wakeup:
            yield b"retry: %d\n\n" % settings.RUNNER_STREAM_RETRY_MS
            batch = first
            # ``first`` was read before this stream listened for rings: read again at once.
            read_now = True
            with suppress(TimeoutError):
                await asyncio.wait_for(wakeups.subscribed.wait(), SUBSCRIBE_WAIT_SECONDS)
            checks = AccessChecks(access, every=keepalive)
            last_write = time.monotonic()
            while True:
                for event_id, frame in batch.frames:
                    yield frame
                    after = event_id
                if batch.frames:
                    last_write = time.monotonic()
                if batch.ended:
                    return
                if await checks.lost():
                    return
                if not (batch.more or read_now):
                    # Wait for a ring or the slow poll; keep-alives and access checks meanwhile.
                    read_at = time.monotonic() + poll
                    while not wakeup.is_set() and time.monotonic() < read_at:
                        timeout = min(read_at, last_write + keepalive, checks.next_at)
                        with suppress(TimeoutError):
                            await asyncio.wait_for(
                                wakeup.wait(), max(0.0, timeout - time.monotonic())
                            )
                        if await checks.lost():
                            return
                        if time.monotonic() - last_write >= keepalive:
                            yield KEEPALIVE
                            last_write = time.monotonic()
                read_now = False
                # Cleared before the read: a ring during the read makes the next wait return.
                wakeup.clear()
                batch = await stream_db(read, after=after)
    finally:
        await stream_db(access.release_slot)


def _no_content() -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]
    return response


def _open(
    request: HttpRequest,
    *,
    readable: Callable[[User], bool],
    hidden: Callable[[], HttpResponseBase],
    read: Callable[..., Batch],
) -> HttpResponseBase | tuple[StreamAccess, Batch, int]:
    """Everything a stream checks before it opens (sync, ORM), in the API's order: credentials
    (401), access (``hidden()``, e.g. a 404), the cursor (400), then the first read (204 when
    nothing is left), then a slot (429)."""
    access = stream_authenticate(request, readable=readable)
    if not isinstance(access, StreamAccess):
        return access
    if not readable(access.user):
        return hidden()
    after = resume_after(request)
    if after is None:
        return refusal(400, "invalid", "Last-Event-ID and after must be an event id (an integer).")
    first = read(after=after)
    if first.ended and not first.frames:
        return _no_content()
    if not access.acquire_slot():
        return too_many_streams()
    return access, first, after


async def sse_stream(
    request: HttpRequest,
    *,
    readable: Callable[[User], bool],
    hidden: Callable[[], HttpResponseBase],
    read: Callable[..., Batch],
    wakeup_key: str,
) -> HttpResponseBase:
    """A stream view's whole answer: refusals, 204 for a stream with nothing left, else the
    events after the cursor, following ``read(after=...)`` (run on the stream reader threads,
    woken by the doorbell ``wakeup_key``) until it ends, while ``readable(user)`` and the
    credential hold (checked at least every keep-alive)."""
    if refused := stream_request_refusal(request):
        return refused
    opened = await stream_db(_open, request=request, readable=readable, hidden=hidden, read=read)
    if isinstance(opened, HttpResponseBase):
        return opened
    access, first, after = opened
    response = StreamingHttpResponse(
        _events(first=first, read=read, after=after, wakeup_key=wakeup_key, access=access),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    # Tells nginx-style proxies not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response
