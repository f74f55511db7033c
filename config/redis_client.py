"""One small Redis client per URL for the operational paths (readiness, metrics counters, API
quotas), with short timeouts: none of them may hold a request when Redis is slow or down."""

from functools import lru_cache

import redis
from django.conf import settings

REDIS_TIMEOUT_SECONDS = 1.0


@lru_cache(maxsize=8)
def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def redis_client(*, timeout: float = REDIS_TIMEOUT_SECONDS) -> redis.Redis:
    """A client of ``settings.REDIS_URL`` (the broker's Redis); its connection pool is shared."""
    return _client(settings.REDIS_URL, timeout)
