"""What the sync and async clients share: the requests of each API call, the retry decisions,
pagination, and the reading of event streams. The clients only move bytes (with ``httpx.Client``
or ``httpx.AsyncClient``) and sleep (``time.sleep`` or ``asyncio.sleep``)."""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from runner_jobs_client.errors import (
    ApiError,
    RetryableError,
    WaitTimeout,
    error_from_response,
)
from runner_jobs_client.models import Event, Job

__version__ = "0.1.0"

T = TypeVar("T")
logger = logging.getLogger("runner_jobs_client")

USER_AGENT = f"runner-jobs-client/{__version__}"
JOBS_PATH = "/api/v1/runner-jobs/"
DEFAULT_TIMEOUT = 10.0
# A stream sends a keep-alive comment after 15 s of silence; twice that without a byte means
# the connection is dead even if no error says so.
STREAM_READ_TIMEOUT = 30.0
# A stream that keeps dropping before it delivers anything new is given up after this many
# reconnections in a row.
STREAM_MAX_FAILURES = 5

IfMatch = int | str | Job | None
QueryParams = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RetryPolicy:
    """How answers worth repeating are repeated: 429 and 503 (after ``Retry-After`` when the
    server sent one, else after an exponential backoff with jitter), and transport errors (a
    refused connection always; a lost answer only for requests safe to repeat: reads, and
    creates, which carry an ``Idempotency-Key``). At most ``max_retries`` retries and
    ``max_wait`` seconds of waiting in all for one call; past either the error is raised
    (:class:`~runner_jobs_client.RateLimited` keeps the server's ``retry_after``)."""

    max_retries: int = 5
    max_wait: float = 30.0
    backoff: float = 0.5
    backoff_max: float = 8.0

    def backoff_delay(self, retry: int) -> float:
        base = min(self.backoff * 2.0 ** (retry - 1), self.backoff_max)
        return base * random.uniform(0.5, 1.0)


NO_RETRIES = RetryPolicy(max_retries=0, max_wait=0)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: QueryParams | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Whether sending it twice does no harm when an answer is lost (reads, keyed creates).
    safe_to_repeat: bool = False


class Attempts:
    """The retry state of one call: after each failed attempt, how long to wait before the
    next one, or the error to raise."""

    def __init__(self, policy: RetryPolicy, call: Call[Any]) -> None:
        self.policy = policy
        self.call = call
        self.retries = 0
        self.waited = 0.0

    def wait_before_next(self, outcome: httpx.Response | httpx.TransportError) -> float:
        """Seconds to wait before trying again; raises the error when it is not worth it."""
        error: ApiError | httpx.TransportError
        if isinstance(outcome, httpx.Response):
            error = error_from_response(outcome)
            if not isinstance(error, RetryableError):
                raise error
            delay = error.retry_after
        else:
            error = outcome
            # Nothing reached the server on a refused connection; otherwise it may have acted.
            unsent = isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)
            if not (unsent or self.call.safe_to_repeat):
                raise error
            delay = None
        self.retries += 1
        if delay is None:
            delay = self.policy.backoff_delay(self.retries)
        if self.retries > self.policy.max_retries or self.waited + delay > self.policy.max_wait:
            raise error
        self.waited += delay
        logger.info(
            "runner-jobs: %s %s: %s; retry %d in %.2f s",
            self.call.method,
            self.call.path,
            error,
            self.retries,
            delay,
        )
        return delay


def raise_for_status(response: httpx.Response) -> httpx.Response:
    if not response.is_success:
        raise error_from_response(response)
    return response


def parse_job(response: httpx.Response) -> Job:
    return Job(response.json())


def parse_json(response: httpx.Response) -> Any:
    return response.json()


# --- Query strings and bodies ------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601; everything else as given."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def query_params(filters: Mapping[str, Any]) -> QueryParams:
    """List filters as a query string: lists of statuses comma-separated, ``tag`` repeated,
    ``metadata={"k": "v"}`` as ``metadata.k=v``, datetimes in ISO 8601; None left out."""
    params: list[tuple[str, str]] = []
    for name, value in filters.items():
        if value is None:
            continue
        if name == "metadata" and isinstance(value, Mapping):
            params += [(f"metadata.{key}", str(item)) for key, item in value.items()]
        elif name == "tag" and isinstance(value, list | tuple | set | frozenset):
            params += [("tag", str(item)) for item in value]
        elif isinstance(value, list | tuple | set | frozenset):
            params.append((name, ",".join(str(item) for item in value)))
        elif isinstance(value, bool):
            params.append((name, "true" if value else "false"))
        else:
            params.append((name, str(jsonable(value))))
    return tuple(params)


def create_body(
    workspace: str, type: str, payload: Mapping[str, Any] | None, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The create body: the fields given (None means "not set", so the server's default)."""
    body = {"workspace": workspace, "type": type, "payload": dict(payload or {})}
    body.update({name: jsonable(value) for name, value in fields.items() if value is not None})
    return body


def if_match_headers(if_match: IfMatch) -> dict[str, str]:
    """``If-Match`` from a version number, an ETag, or a job (its current version)."""
    if if_match is None:
        return {}
    if isinstance(if_match, Job):
        return {"If-Match": if_match.etag}
    if isinstance(if_match, int):
        return {"If-Match": f'"{if_match}"'}
    return {"If-Match": if_match}


def job_path(job_id: str | Job, suffix: str = "") -> str:
    job_id = job_id.id if isinstance(job_id, Job) else str(job_id)
    return f"{JOBS_PATH}{quote(job_id, safe='')}/{suffix}"


# --- The consumer API's calls ------------------------------------------------------------------


def job_create_call(body: dict[str, Any], idempotency_key: str | None) -> Call[Job]:
    # A key of our own when the caller gives none, so our own retries never make two jobs.
    key = idempotency_key or str(uuid.uuid4())
    return Call(
        "POST",
        JOBS_PATH,
        parse_job,
        json=body,
        headers={"Idempotency-Key": key},
        safe_to_repeat=True,
    )


def job_get_call(job_id: str | Job) -> Call[Job]:
    return Call("GET", job_path(job_id), parse_job, safe_to_repeat=True)


def job_explain_call(job_id: str | Job) -> Call[Any]:
    return Call("GET", job_path(job_id, "explain/"), parse_json, safe_to_repeat=True)


def job_cancel_call(job_id: str | Job, if_match: IfMatch) -> Call[Job]:
    return Call("POST", job_path(job_id, "cancel/"), parse_job, headers=if_match_headers(if_match))


def job_retry_call(job_id: str | Job, if_match: IfMatch, changes: Mapping[str, Any]) -> Call[Job]:
    body = {name: jsonable(value) for name, value in changes.items() if value is not None}
    return Call(
        "POST",
        job_path(job_id, "retry/"),
        parse_job,
        json=body or None,
        headers=if_match_headers(if_match),
    )


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # The query of the next page (its cursor), or None on the last page.
    next_params: QueryParams | None


def page_parser(item: Callable[[Any], T]) -> Callable[[httpx.Response], Page[T]]:
    def parse(response: httpx.Response) -> Page[T]:
        body = response.json()
        link = body.get("next")
        # Only the query of the "next" link is used: its host is what the server saw, which
        # behind a proxy is not necessarily the one we talk to.
        next_params = tuple(httpx.URL(link).params.multi_items()) if link else None
        return Page([item(result) for result in body["results"]], next_params)

    return parse


def job_list_call(params: QueryParams) -> Call[Page[Job]]:
    return Call("GET", JOBS_PATH, page_parser(Job), params=params, safe_to_repeat=True)


def job_events_call(job_id: str | Job, params: QueryParams) -> Call[Page[Event]]:
    return Call(
        "GET", job_path(job_id, "events/"), page_parser(Event), params=params, safe_to_repeat=True
    )


def last_event_id(job: Job) -> int:
    return max((event.id for event in job.events), default=0)


# --- Event streams -----------------------------------------------------------------------------


class SSEDecoder:
    """Server-Sent Events, line by line: returns a message's ``(id, event, data)`` at the blank
    line that ends it. A message cut off by a dropped connection is never returned."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._id: str | None = None
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str, str] | None:
        if not line:
            message = (self._id, self._event, "\n".join(self._data)) if self._data else None
            self.reset()
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class Deadline:
    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def passed(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0


class Follow:
    """The state of following one job's stream across connections: the last event delivered
    (sent as ``Last-Event-ID`` on every reconnection, and the floor below which a repeated
    event is dropped), whether the job has ended, and when to stop trying."""

    def __init__(
        self, job_id: str | Job, *, after: int | None, timeout: float | None, read_timeout: float
    ) -> None:
        self.path = job_path(job_id, "events/stream/")
        self.last_id = after or 0
        self.deadline = Deadline(timeout)
        self.read_timeout = read_timeout
        self.done = False
        self.failures = 0
        self.connections = 0
        self.decoder = SSEDecoder()

    def call(self) -> Call[httpx.Response]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_id:
            headers["Last-Event-ID"] = str(self.last_id)
        return Call("GET", self.path, raise_for_status, headers=headers, safe_to_repeat=True)

    def timeout(self, base: httpx.Timeout) -> httpx.Timeout:
        remaining = self.deadline.remaining()
        read = (
            self.read_timeout if remaining is None else max(0.0, min(self.read_timeout, remaining))
        )
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    def opened(self, response: httpx.Response) -> None:
        self.connections += 1
        self.decoder.reset()
        # 204: the server says the stream is over (we are at or past the terminal event).
        if response.status_code == 204:
            self.done = True

    def feed(self, line: str) -> Event | None:
        """The event a line completes, if it is one not delivered before."""
        if self.deadline.passed():
            raise self.timed_out()
        message = self.decoder.feed(line)
        if message is None:
            return None
        event = Event(json.loads(message[2]))
        if event.id <= self.last_id:
            return None
        self.last_id = event.id
        self.failures = 0
        if event.terminal:
            self.done = True
        return event

    def reconnect_delay(self, error: httpx.TransportError | None) -> float:
        """The connection ended before the terminal event (closed, or ``error``): how long to
        wait before reconnecting. Raises once the deadline passed or the stream keeps failing."""
        if self.deadline.passed():
            raise self.timed_out()
        self.failures += 1
        if self.failures > STREAM_MAX_FAILURES:
            if error is not None:
                raise error
            raise httpx.RemoteProtocolError("The event stream keeps closing before the job ends.")
        logger.info(
            "runner-jobs: stream of %s ended (%s); resuming after event %d",
            self.path,
            error or "closed",
            self.last_id,
        )
        delay = min(0.25 * 2.0 ** (self.failures - 1), 5.0) * random.uniform(0.5, 1.0)
        remaining = self.deadline.remaining()
        return delay if remaining is None else max(0.0, min(delay, remaining))

    def timed_out(self) -> WaitTimeout:
        return WaitTimeout(f"{self.path}: no terminal event within the timeout")
