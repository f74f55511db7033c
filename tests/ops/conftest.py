import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from django.core.cache import cache

from config.redis_client import redis_client
from runner_jobs import metrics


@pytest.fixture
def metrics_reset() -> Iterator[None]:
    """Counters start from nothing; terminal counts are read afresh."""
    redis_client().delete(metrics.COUNTERS_KEY)
    cache.delete(metrics.TERMINAL_COUNTS_CACHE_KEY)
    metrics._redis_skip_until = 0.0
    yield
    metrics._redis_skip_until = 0.0


def port_wait(port: int, *, up: bool, timeout: float = 10.0) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (or, with ``up=False``, nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            listening = sock.connect_ex(("127.0.0.1", port)) == 0
        if listening == up:
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} still {'down' if up else 'up'} after {timeout} s")


class ThrowawayRedis:
    """A redis-server of our own on a spare port, to stop and start without touching the
    shared one."""

    port = 6396

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        port_wait(self.port, up=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        port_wait(self.port, up=False)


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
