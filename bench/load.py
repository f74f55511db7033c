"""Load generation and measurement: wrk for throughput, timed requests for latency, and a swarm
of Server-Sent Events clients held open in one asyncio thread."""

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

# wrk's connections: the web tier's request threads (2 processes x 16 in the Procfile), so the
# server, not the client, is what saturates.
WRK_CONNECTIONS = 32
WRK_THREADS = 2
WRK_TIMEOUT = "5s"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of ``values``, or None if there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


@dataclass
class WrkResult:
    requests_per_second: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors (timeouts included)
    latency_ms: dict[str, float] = field(default_factory=dict)  # "p50", "p90", "p99"

    def figures(self) -> dict[str, Any]:
        return {
            "requests/s": round(self.requests_per_second, 1),
            "requests": self.requests,
            "errors": self.errors,
            **{f"latency {k} ms": round(v, 1) for k, v in self.latency_ms.items()},
        }


def wrk(
    url: str,
    *,
    seconds: int,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    connections: int = WRK_CONNECTIONS,
) -> WrkResult:
    """Load ``url`` for ``seconds`` with wrk (C, so the client takes little of the 2 cores)."""
    script = [f"wrk.method = {json.dumps(method)}"]
    if body is not None:
        script.append(f"wrk.body = {json.dumps(json.dumps(body))}")
        script.append('wrk.headers["Content-Type"] = "application/json"')
    for name, value in (headers or {}).items():
        script.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write("\n".join(script) + "\n")
        lua.flush()
        out = subprocess.run(
            [
                "wrk",
                f"-t{WRK_THREADS}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                WRK_TIMEOUT,
                "--latency",
                "-s",
                lua.name,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> WrkResult:
    """The figures of wrk's ``--latency`` report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(n) for n in match.groups())
    latency = {
        f"p{pct}": float(value) * _UNITS[unit]
        for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    return WrkResult(rps, total, errors, latency)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """(milliseconds, result) of one call."""
    began = time.perf_counter()
    result = call()
    return (time.perf_counter() - began) * 1000, result


def latencies(call: Callable[[], Any], *, times: int, warmup: int = 3) -> list[float]:
    """Milliseconds of ``times`` sequential calls, after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        call()
    return [timed(call)[0] for _ in range(times)]


def latency_figures(values: list[float], *percentiles: int) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    for q in percentiles:
        value = percentile(values, q)
        figures[f"p{q} ms"] = round(value, 1) if value is not None else None
    return figures


def concurrently(calls: Sequence[Callable[[], Any]], workers: int) -> list[Any]:
    """Run ``calls`` on ``workers`` threads; their results in order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: call(), calls))


class StreamSwarm:
    """Many open event streams, each on its own connection, held by one asyncio thread.

    Every frame's arrival is recorded with the wall clock, so the delay from an event's
    ``timestamp`` (set by PostgreSQL at the INSERT) to its arrival is measured on one clock.
    """

    def __init__(self, base_url: str, token: str, job_ids: list[str]) -> None:
        self.base_url = base_url
        self.token = token
        self.job_ids = job_ids
        self.opened = 0
        self.failed: list[str] = []
        # (job id, event type, seconds from the event's timestamp to its arrival)
        self.arrivals: list[tuple[str, str, float]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list[asyncio.Future[None]] = []

    def open(self, timeout: float) -> None:
        """Open every stream; return once all answered 200 or ``timeout`` passed."""
        self._thread.start()
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Token {self.token}", "Accept": "text/event-stream"},
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
            timeout=httpx.Timeout(10, read=None),
        )
        self._tasks = [
            asyncio.run_coroutine_threadsafe(self._follow(job_id), self._loop)  # type: ignore[misc]
            for job_id in self.job_ids
        ]
        deadline = time.monotonic() + timeout
        while self.opened + len(self.failed) < len(self.job_ids) and time.monotonic() < deadline:
            time.sleep(0.1)

    async def _follow(self, job_id: str) -> None:
        try:
            url = f"/api/v1/runner-jobs/{job_id}/events/stream/"
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    self.failed.append(f"{response.status_code}")
                    return
                self.opened += 1
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        arrived = time.time()
                        event = json.loads(line[6:])
                        sent = datetime.fromisoformat(event["timestamp"]).timestamp()
                        self.arrivals.append((job_id, event["type"], arrived - sent))
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self.failed.append(type(exc).__name__)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
