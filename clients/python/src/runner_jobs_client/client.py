"""The blocking client: ``Client`` for the consumer API, and the transport the coordinator
client shares."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from runner_jobs_client import _core
from runner_jobs_client._core import Call, IfMatch, RetryPolicy
from runner_jobs_client.errors import WaitTimeout
from runner_jobs_client.models import Event, Job

T = TypeVar("T")


class SyncTransport:
    """Sends calls with ``httpx.Client``, retrying as the policy says."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        retry: RetryPolicy,
        stream_read_timeout: float,
        http_client: httpx.Client | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"User-Agent": _core.USER_AGENT, **headers}
        self.retry = retry
        self.stream_read_timeout = stream_read_timeout
        self.timeout = httpx.Timeout(timeout)
        self.owns_http = http_client is None
        self.http = http_client or httpx.Client(timeout=self.timeout)

    def _request(self, call: Call[Any], timeout: httpx.Timeout | None) -> httpx.Request:
        return self.http.build_request(
            call.method,
            self.base_url + call.path,
            params=call.params,
            json=call.json,
            headers={**self.headers, **call.headers},
            timeout=timeout or self.timeout,
        )

    def response(
        self, call: Call[Any], *, stream: bool = False, timeout: httpx.Timeout | None = None
    ) -> httpx.Response:
        """The successful answer to ``call`` (its body unread when ``stream``)."""
        attempts = _core.Attempts(self.retry, call)
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self.http.send(self._request(call, timeout), stream=stream)
            except httpx.TransportError as exc:
                outcome = exc
            else:
                if outcome.is_success:
                    return outcome
                if stream:
                    outcome.read()
                    outcome.close()
            time.sleep(attempts.wait_before_next(outcome))

    def send(self, call: Call[T]) -> T:
        return call.parse(self.response(call))

    def pages(self, call: Call[_core.Page[T]]) -> Iterator[T]:
        while True:
            page = self.send(call)
            yield from page.items
            if page.next_params is None:
                return
            call = Call(
                call.method, call.path, call.parse, params=page.next_params, safe_to_repeat=True
            )

    def close(self) -> None:
        if self.owns_http:
            self.http.close()


class Jobs:
    """``client.jobs``: the consumer API's job endpoints."""

    def __init__(self, transport: SyncTransport) -> None:
        self._t = transport

    def create(
        self,
        workspace: str,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
        agent_task_id: str | None = None,
        max_attempts: int | None = None,
        run_at: datetime | str | None = None,
        ttl_seconds: int | None = None,
        timeout_seconds: int | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        unique_key: str | None = None,
        tags: list[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Job:
        """Create a job (201), or get the one an earlier create with the same
        ``idempotency_key`` made. Every create carries a key (a new one when none is given), so
        a create retried after a lost answer is still one job. Options left None are not sent
        (the server's defaults apply); ``fields`` passes any other create field through."""
        body = _core.create_body(
            workspace,
            type,
            payload,
            {
                "priority": priority,
                "agent_task_id": agent_task_id,
                "max_attempts": max_attempts,
                "run_at": run_at,
                "ttl_seconds": ttl_seconds,
                "timeout_seconds": timeout_seconds,
                "concurrency_key": concurrency_key,
                "concurrency_limit": concurrency_limit,
                "unique_key": unique_key,
                "tags": tags,
                "metadata": metadata,
                **fields,
            },
        )
        return self._t.send(_core.job_create_call(body, idempotency_key))

    def get(self, job_id: str | Job) -> Job:
        """The job with its steps and latest 100 events."""
        return self._t.send(_core.job_get_call(job_id))

    def list(self, *, page_size: int | None = None, **filters: Any) -> Iterator[Job]:
        """Every job matching the filters, newest first, fetching page after page as you
        iterate: ``status`` (a string or a list), ``type``, ``agent_task_id``, ``workspace``,
        ``created_after``/``created_before`` (datetimes), ``retry_of``, ``tag`` (a list: jobs
        having all), ``metadata`` (a dict), and any other filter the server knows."""
        params = _core.query_params({**filters, "page_size": page_size})
        return self._t.pages(_core.job_list_call(params))

    def events(
        self, job_id: str | Job, *, after: int | None = None, type: str | None = None
    ) -> Iterator[Event]:
        """The job's events, oldest first (every page), after an event id, of one type."""
        params = _core.query_params({"after": after, "type": type})
        return self._t.pages(_core.job_events_call(job_id, params))

    def cancel(self, job_id: str | Job, *, if_match: IfMatch = None) -> Job:
        """Cancel a pending, queued or running job. ``if_match`` (a version, an ETag or a
        :class:`Job`) makes it conditional: :class:`PreconditionFailed` if the job changed."""
        return self._t.send(_core.job_cancel_call(job_id, if_match))

    def retry(self, job_id: str | Job, *, if_match: IfMatch = None, **changes: Any) -> Job:
        """A new job from a failed or cancelled one; ``changes`` (``payload``, ``priority``,
        ``tags``, ``metadata``, ``run_at``) alter the copy where the server supports it."""
        return self._t.send(_core.job_retry_call(job_id, if_match, changes))

    def explain(self, job_id: str | Job) -> dict[str, Any]:
        """Why the job is (not) running: ``{"job", "status", "runnable", "reasons": [...]}``."""
        explanation: dict[str, Any] = self._t.send(_core.job_explain_call(job_id))
        return explanation

    def follow(
        self, job_id: str | Job, *, after: int | None = None, timeout: float | None = None
    ) -> Iterator[Event]:
        """The job's events as they happen, from the first (or after event id ``after``) to the
        terminal one. A dropped connection is resumed with ``Last-Event-ID``: no event is
        skipped or repeated. :class:`WaitTimeout` after ``timeout`` seconds."""
        follow = _core.Follow(
            job_id, after=after, timeout=timeout, read_timeout=self._t.stream_read_timeout
        )
        while not follow.done:
            response = self._t.response(
                follow.call(), stream=True, timeout=follow.timeout(self._t.timeout)
            )
            error: httpx.TransportError | None = None
            try:
                follow.opened(response)
                for line in response.iter_lines():
                    event = follow.feed(line)
                    if event is not None:
                        yield event
                    if follow.done:
                        break
            except httpx.TransportError as exc:
                error = exc
            finally:
                response.close()
            if not follow.done:
                time.sleep(follow.reconnect_delay(error))

    def wait(self, job_id: str | Job, timeout: float | None = None) -> Job:
        """Block until the job has ended (completed, failed, cancelled or expired) and return
        it; :class:`WaitTimeout` (with the job as it is then) after ``timeout`` seconds."""
        deadline = _core.Deadline(timeout)
        job = self.get(job_id)
        if job.terminal:
            return job
        try:
            for _ in self.follow(job, after=_core.last_event_id(job), timeout=deadline.remaining()):
                pass
        except WaitTimeout as exc:
            raise WaitTimeout(str(exc), job=self.get(job)) from None
        return self.get(job)


class Client:
    """The consumer API, authenticated by a token (``create_api_token`` prints one)::

    client = Client("http://127.0.0.1:8000", token)
    job = client.jobs.create("acme", "echo", {"hello": "world"})
    print(client.jobs.wait(job.id, timeout=30).result)
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = _core.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        stream_read_timeout: float = _core.STREAM_READ_TIMEOUT,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._transport = SyncTransport(
            base_url,
            {"Authorization": f"Token {token}"},
            timeout=timeout,
            retry=retry or RetryPolicy(),
            stream_read_timeout=stream_read_timeout,
            http_client=http_client,
        )
        self.jobs = Jobs(self._transport)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
