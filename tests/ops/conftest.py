import socket
import time
from collections.abc import Iterator

import pytest
from django.core.cache import cache

from chaos.servers import ThrowawayRedis, free_port
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


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
