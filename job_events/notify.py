"""Waking event streams: a Redis pub/sub doorbell rung after each event's transaction commits.

The message says only "job J has new events"; a woken stream reads them from PostgreSQL, which
stays the one source of truth. A lost message (Redis down or restarting) costs latency, not
events: every stream also polls slowly (``RUNNER_STREAM_POLL_SECONDS``).

Redis pub/sub rather than PostgreSQL ``NOTIFY``: publishing does not touch the database (a
``NOTIFY`` takes a global lock at commit), and each web process holds one subscription for all
its streams instead of a database connection per ``LISTEN``.
"""

import asyncio
import logging
import uuid
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cache

import redis
import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "runner_jobs:job_events"
# Short, so a Redis outage delays a writer's commit hook by at most this much.
PUBLISH_TIMEOUT_SECONDS = 0.5
RESUBSCRIBE_DELAY_SECONDS = 1.0
# The key of a waiter woken by every job's ring (the workspace feed, job_events/feed.py).
EVERY_JOB = "*"


@cache
def _publisher() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=PUBLISH_TIMEOUT_SECONDS,
        socket_connect_timeout=PUBLISH_TIMEOUT_SECONDS,
    )


def job_events_notify(*, job_ids: Sequence[uuid.UUID | str]) -> None:
    """Tell every listening stream that each of ``job_ids`` has new committed events, in one
    round trip. Never raises: the events are already committed, and streams find them by
    polling if these rings are lost."""
    try:
        pipe = _publisher().pipeline(transaction=False)
        for job_id in job_ids:
            pipe.publish(CHANNEL, str(job_id))
        pipe.execute()
    except redis.RedisError:
        logger.warning("Could not publish the event notifications of jobs %s", job_ids)


class StreamWakeups:
    """One event loop's subscription to ``CHANNEL``, fanned out to the streams waiting on it.

    A stream registers an ``asyncio.Event`` for its job before it reads, so a ring that arrives
    while it reads is not lost: the event is set and its next wait returns at once.
    """

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    @asynccontextmanager
    async def waiter(self, job_id: uuid.UUID | str) -> AsyncIterator[asyncio.Event]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())
        key = str(job_id)
        wakeup = asyncio.Event()
        self._waiters[key].add(wakeup)
        try:
            yield wakeup
        finally:
            self._waiters[key].discard(wakeup)
            if not self._waiters[key]:
                del self._waiters[key]

    def _wake(self, key: str | None) -> None:
        """Wake the streams of job ``key``, or every stream when ``key`` is None."""
        keys = list(self._waiters) if key is None else [key, EVERY_JOB]
        for k in keys:
            for wakeup in self._waiters.get(k, ()):
                wakeup.set()

    async def _listen(self) -> None:
        while True:
            try:
                client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
                async with client, client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self.subscribed.set()
                    # Rings may have been lost while (re)subscribing: let every stream re-read.
                    self._wake(None)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake(message["data"].decode())
            except Exception:
                # Whatever broke the subscription, streams keep polling; try again shortly.
                logger.warning("Event notification subscription lost; resubscribing", exc_info=True)
            self.subscribed.clear()
            await asyncio.sleep(RESUBSCRIBE_DELAY_SECONDS)


_wakeups: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamWakeups]" = (
    weakref.WeakKeyDictionary()
)


def stream_wakeups() -> StreamWakeups:
    """The running event loop's ``StreamWakeups`` (one per loop, so one per web process)."""
    loop = asyncio.get_running_loop()
    if loop not in _wakeups:
        _wakeups[loop] = StreamWakeups()
    return _wakeups[loop]
