"""``CoordinatorClient``: run jobs outside Celery (e.g. AI agents) and report back.

A claim returns :class:`Lease` objects. Inside ``with lease:`` a background thread keeps the
lease alive while your code works, every report carries the lease's token, and leaving the block
completes the job with ``lease.result`` (or fails it with the exception's text). A lease that
turned stale (it expired and the job went to someone else, or the job was cancelled) raises
:class:`StaleLease` at your next report, so your code stops instead of working for nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from runner_jobs_client import _core
from runner_jobs_client._core import Call, RetryPolicy
from runner_jobs_client.client import SyncTransport
from runner_jobs_client.errors import RunnerJobsError, StaleLease
from runner_jobs_client.models import Job, Step

logger = logging.getLogger("runner_jobs_client")

COORDINATOR_PATH = "/api/v1/coordinator/"
DEFAULT_LEASE_SECONDS = 60.0


def error_text(exc: BaseException) -> str:
    """How a failure is reported: ``"ValueError: bad input"`` (the type alone when the
    exception has no text), as the service's own workers do."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _path(job_id: str, suffix: str = "") -> str:
    return f"{COORDINATOR_PATH}jobs/{job_id}/{suffix}"


def _step(response: httpx.Response) -> Step:
    return Step(response.json())


class LeaseStep:
    """A step of a leased job: started on entering ``with lease.step(name):``, completed on a
    clean exit, failed (with the exception's text as output) otherwise."""

    def __init__(self, lease: Lease, name: str, phase: str) -> None:
        self.lease = lease
        self.name = name
        self.phase = phase
        self.step: Step | None = None

    @property
    def id(self) -> int:
        if self.step is None:
            raise RunnerJobsError("The step has not started: use it in a with block.")
        return self.step.id

    def output(self, text: str) -> Step:
        """Append ``text`` to the running step's output."""
        return self._update("running", text)

    def _update(self, status: str, output: str = "") -> Step:
        body = {"status": status, "output": output, **self.lease.token_body}
        call = Call("PATCH", _path(self.lease.id, f"steps/{self.id}/"), _step, json=body)
        self.step = self.lease.report(call)
        return self.step

    def __enter__(self) -> LeaseStep:
        body = {"name": self.name, "phase": self.phase, **self.lease.token_body}
        self.step = self.lease.report(
            Call("POST", _path(self.lease.id, "steps/"), _step, json=body)
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self._update("completed")
        elif not isinstance(exc, StaleLease) and self.lease.stale is None:
            self._update("failed", error_text(exc))


class Lease:
    """A claimed job and the lease of its attempt. ``job`` is the job as claimed; ``result`` is
    what a clean exit of ``with lease:`` completes it with."""

    def __init__(self, transport: SyncTransport, job: Job) -> None:
        self._t = transport
        self.job = job
        self.token = str(job["lease_token"])
        self.result: Any = None
        self.stale: StaleLease | None = None
        self.finished = False
        self.interval = self._lease_seconds(job) / 3
        self._renewed_at = time.monotonic()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @staticmethod
    def _lease_seconds(job: Job) -> float:
        # Both times are the server's, so the client's clock does not matter.
        expires, started = job.get("lease_expires_at"), job.started_at
        if not expires or started is None:
            return DEFAULT_LEASE_SECONDS
        seconds = (datetime.fromisoformat(expires.replace("Z", "+00:00")) - started).total_seconds()
        return max(seconds, 1.0)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def token_body(self) -> dict[str, str]:
        return {"lease_token": self.token}

    def report(self, call: Call[_core.T]) -> _core.T:
        """Send a report of this lease: refused here at once if the lease is known to be stale;
        otherwise the server's answer, which also renews the lease."""
        if self.stale is not None:
            raise self.stale
        try:
            value = self._t.send(call)
        except StaleLease as exc:
            self.stale = exc
            raise
        self._renewed_at = time.monotonic()
        return value

    def _job_report(self, suffix: str, body: Mapping[str, Any]) -> Job:
        call = Call(
            "POST", _path(self.id, suffix), _core.parse_job, json={**body, **self.token_body}
        )
        return self.report(call)

    def progress(self, progress: int, message: str | None = None) -> Job:
        """Report progress 0-100 (the job's stored progress never decreases)."""
        return self._job_report("progress/", {"progress": progress, "message": message or ""})

    def event(
        self, type: str, payload: Mapping[str, Any] | None = None, *, step: int | None = None
    ) -> Job:
        """Append a custom event (a dotted lowercase type such as ``agent.tool_call``)."""
        return self._job_report(
            "events/", {"type": type, "payload": dict(payload or {}), "step": step}
        )

    def step(self, name: str, phase: str = "execution") -> LeaseStep:
        """``with lease.step("research") as step:`` a step of the job."""
        return LeaseStep(self, name, phase)

    def renew(self) -> None:
        """Extend the lease now (the background thread does it inside ``with lease:``)."""
        call = Call("POST", _path(self.id, "heartbeat/"), _core.parse_json, json=self.token_body)
        self.report(call)

    def complete(self, result: Any = None) -> Job:
        """Complete the job with ``result`` (exactly once; a second completion is refused)."""
        job = self._job_report("complete/", {"result": _core.jsonable(result)})
        self.finished = True
        return job

    def fail(self, error: str) -> Job:
        """Fail the job with ``error``."""
        job = self._job_report("fail/", {"error": error})
        self.finished = True
        return job

    def release(self) -> Job:
        """Hand the job back (it is queued again for the next claim; this attempt counts)."""
        job = self._job_report("status/", {"status": "queued"})
        self.finished = True
        return job

    def _renew_in_background(self) -> None:
        while not self._stop.wait(max(0.05, self._renewed_at + self.interval - time.monotonic())):
            if time.monotonic() - self._renewed_at < self.interval:
                continue  # a report renewed it meanwhile
            try:
                self.renew()
            except StaleLease:
                logger.warning("runner-jobs: the lease of job %s is stale", self.id)
                return
            except (RunnerJobsError, httpx.HTTPError) as exc:
                # Worth trying again before the lease runs out; reports will say if it did.
                logger.warning("runner-jobs: renewing the lease of job %s failed: %s", self.id, exc)
                self._renewed_at = time.monotonic() - self.interval * 2 / 3

    def __enter__(self) -> Lease:
        self._renewer = threading.Thread(
            target=self._renew_in_background, name=f"lease-{self.id}", daemon=True
        )
        self._renewer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.finished or isinstance(exc, StaleLease):
            return
        if exc is None:
            self.complete(self.result)
            return
        # The error in the block is what the caller sees; reporting it is best effort.
        try:
            if isinstance(exc, Exception):
                self.fail(error_text(exc))
            else:
                # Interrupted (Ctrl-C, shutdown): not the job's fault, so it goes back to the queue.
                self.release()
        except (RunnerJobsError, httpx.HTTPError) as report_error:
            logger.warning("runner-jobs: could not report job %s: %s", self.id, report_error)


class CoordinatorClient:
    """The coordinator API, authenticated by an API key (``create_coordinator_key`` prints
    one)::

        coordinator = CoordinatorClient("http://127.0.0.1:8000", api_key)
        for lease in coordinator.claim(["agent-task"], limit=4, worker="agent-1"):
            with lease:
                lease.result = {"answer": 42}
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = _core.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._t = SyncTransport(
            base_url,
            {"X-API-Key": api_key},
            timeout=timeout,
            retry=retry or RetryPolicy(),
            stream_read_timeout=_core.STREAM_READ_TIMEOUT,
            http_client=http_client,
        )

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "key": <name>, "workspaces": [...] or None}``."""
        health: dict[str, Any] = self._t.send(
            Call("GET", f"{COORDINATOR_PATH}health/", _core.parse_json, safe_to_repeat=True)
        )
        return health

    def create(
        self,
        workspace: str,
        type: str,
        payload: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Job:
        """Create a job in one of the key's workspaces (the consumer create's fields)."""
        body = _core.create_body(workspace, type, payload, fields)
        return self._t.send(Call("POST", f"{COORDINATOR_PATH}jobs/", _core.parse_job, json=body))

    def get(self, job_id: str | Job) -> Job:
        """The job with its steps and latest 100 events."""
        job_id = job_id.id if isinstance(job_id, Job) else job_id
        return self._t.send(Call("GET", _path(job_id), _core.parse_job, safe_to_repeat=True))

    def claim(
        self, types: str | list[str], limit: int = 1, *, worker: str | None = None
    ) -> list[Lease]:
        """Start up to ``limit`` queued jobs of ``types`` (highest priority, then oldest) for
        ``worker`` (default: the key's name); an empty list when none is waiting."""
        body: dict[str, Any] = {
            "types": [types] if isinstance(types, str) else types,
            "limit": limit,
        }
        if worker is not None:
            body["worker"] = worker
        answer = self._t.send(
            Call("POST", f"{COORDINATOR_PATH}jobs/claim/", _core.parse_json, json=body)
        )
        return [Lease(self._t, Job(job)) for job in answer["jobs"]]

    def close(self) -> None:
        self._t.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
