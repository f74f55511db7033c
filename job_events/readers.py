"""The threads that run the event streams' database reads, and their connections.

Streams are coroutines; the ORM is synchronous, so each read runs in a thread. Not the
request's own thread: under ASGI each request gets a fresh one, so its connection could not be
reused and, kept open, would leak (hence ``CONN_MAX_AGE=0`` on the ASGI web tier). Instead a
small, fixed pool of long-lived threads serves every stream of the process, and each keeps its
connection for ``RUNNER_STREAM_CONN_MAX_AGE`` seconds: at most ``RUNNER_STREAM_DB_THREADS``
connections per process however many streams are open, and no connect per poll.
"""

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

T = TypeVar("T")

_opened_at = threading.local()


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=settings.RUNNER_STREAM_DB_THREADS, thread_name_prefix="stream-db"
    )


def _run(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    db = connections[DEFAULT_DB_ALIAS]
    max_age = settings.RUNNER_STREAM_CONN_MAX_AGE
    if db.connection is not None and time.monotonic() - _opened_at.value >= max_age:
        db.close()
    if db.connection is None:
        _opened_at.value = time.monotonic()
    try:
        return fn(**kwargs)
    except DatabaseError:
        # A broken connection (PostgreSQL restarted) is dropped; the next read reconnects.
        db.close()
        raise
    finally:
        if max_age == 0:
            db.close()


async def stream_db(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run ``fn`` (which uses the ORM) on a stream reader thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), partial(_run, fn, kwargs))
