"""``AsyncClient``: the consumer API for asyncio code, the same calls as :class:`Client`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from runner_jobs_client import _core
from runner_jobs_client._core import Call, IfMatch, RetryPolicy
from runner_jobs_client.errors import WaitTimeout
from runner_jobs_client.models import Event, Job

T = TypeVar("T")


class AsyncTransport:
    """Sends calls with ``httpx.AsyncClient``, retrying as the policy says."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        retry: RetryPolicy,
        stream_read_timeout: float,
        http_client: httpx.AsyncClient | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"User-Agent": _core.USER_AGENT, **headers}
        self.retry = retry
        self.stream_read_timeout = stream_read_timeout
        self.timeout = httpx.Timeout(timeout)
        self.owns_http = http_client is None
        self.http = http_client or httpx.AsyncClient(timeout=self.timeout)

    def _request(self, call: Call[Any], timeout: httpx.Timeout | None) -> httpx.Request:
        return self.http.build_request(
            call.method,
            self.base_url + call.path,
            params=call.params,
            json=call.json,
            headers={**self.headers, **call.headers},
            timeout=timeout or self.timeout,
        )

    async def response(
        self, call: Call[Any], *, stream: bool = False, timeout: httpx.Timeout | None = None
    ) -> httpx.Response:
        """The successful answer to ``call`` (its body unread when ``stream``)."""
        attempts = _core.Attempts(self.retry, call)
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self.http.send(self._request(call, timeout), stream=stream)
            except httpx.TransportError as exc:
                outcome = exc
            else:
                if outcome.is_success:
                    return outcome
                if stream:
                    await outcome.aread()
                    await outcome.aclose()
            await asyncio.sleep(attempts.wait_before_next(outcome))

    async def send(self, call: Call[T]) -> T:
        return call.parse(await self.response(call))

    async def pages(self, call: Call[_core.Page[T]]) -> AsyncIterator[T]:
        while True:
            page = await self.send(call)
            for item in page.items:
                yield item
            if page.next_params is None:
                return
            call = Call(
                call.method, call.path, call.parse, params=page.next_params, safe_to_repeat=True
            )

    async def aclose(self) -> None:
        if self.owns_http:
            await self.http.aclose()


class AsyncJobs:
    """``client.jobs`` of :class:`AsyncClient`; see :class:`~runner_jobs_client.client.Jobs`
    for what each call does."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def create(
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
        return await self._t.send(_core.job_create_call(body, idempotency_key))

    async def get(self, job_id: str | Job) -> Job:
        return await self._t.send(_core.job_get_call(job_id))

    def list(self, *, page_size: int | None = None, **filters: Any) -> AsyncIterator[Job]:
        params = _core.query_params({**filters, "page_size": page_size})
        return self._t.pages(_core.job_list_call(params))

    def events(
        self, job_id: str | Job, *, after: int | None = None, type: str | None = None
    ) -> AsyncIterator[Event]:
        params = _core.query_params({"after": after, "type": type})
        return self._t.pages(_core.job_events_call(job_id, params))

    async def cancel(self, job_id: str | Job, *, if_match: IfMatch = None) -> Job:
        return await self._t.send(_core.job_cancel_call(job_id, if_match))

    async def retry(self, job_id: str | Job, *, if_match: IfMatch = None, **changes: Any) -> Job:
        return await self._t.send(_core.job_retry_call(job_id, if_match, changes))

    async def explain(self, job_id: str | Job) -> dict[str, Any]:
        explanation: dict[str, Any] = await self._t.send(_core.job_explain_call(job_id))
        return explanation

    async def follow(
        self, job_id: str | Job, *, after: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[Event]:
        follow = _core.Follow(
            job_id, after=after, timeout=timeout, read_timeout=self._t.stream_read_timeout
        )
        while not follow.done:
            response = await self._t.response(
                follow.call(), stream=True, timeout=follow.timeout(self._t.timeout)
            )
            error: httpx.TransportError | None = None
            try:
                follow.opened(response)
                async for line in response.aiter_lines():
                    event = follow.feed(line)
                    if event is not None:
                        yield event
                    if follow.done:
                        break
            except httpx.TransportError as exc:
                error = exc
            finally:
                await response.aclose()
            if not follow.done:
                await asyncio.sleep(follow.reconnect_delay(error))

    async def wait(self, job_id: str | Job, timeout: float | None = None) -> Job:
        deadline = _core.Deadline(timeout)
        job = await self.get(job_id)
        if job.terminal:
            return job
        try:
            async for _ in self.follow(
                job, after=_core.last_event_id(job), timeout=deadline.remaining()
            ):
                pass
        except WaitTimeout as exc:
            raise WaitTimeout(str(exc), job=await self.get(job)) from None
        return await self.get(job)


class AsyncClient:
    """The consumer API for asyncio::

    async with AsyncClient("http://127.0.0.1:8000", token) as client:
        job = await client.jobs.create("acme", "echo", {"hello": "world"})
        async for event in client.jobs.follow(job.id):
            print(event.type)
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = _core.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        stream_read_timeout: float = _core.STREAM_READ_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._transport = AsyncTransport(
            base_url,
            {"Authorization": f"Token {token}"},
            timeout=timeout,
            retry=retry or RetryPolicy(),
            stream_read_timeout=stream_read_timeout,
            http_client=http_client,
        )
        self.jobs = AsyncJobs(self._transport)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
