"""A per-token request quota for the API (fair use, not a security boundary).

DRF's own throttles keep a list of timestamps per client in the cache and rewrite it on every
request, which costs O(rate) per request at generous rates; this one is a fixed-window counter
in Redis (one INCR per request), shared by every web process. If Redis cannot be reached the
request is let through: a quota is not worth an outage."""

import time
from typing import Any

import redis
import structlog
from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from config.redis_client import redis_client

logger = structlog.get_logger("runner_jobs.ops")

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def quota_parse(rate: str) -> tuple[int, int]:
    """``"100000/hour"`` -> (100000, 3600). The period is read by its first letter."""
    count, _, period = rate.partition("/")
    return int(count), PERIOD_SECONDS[period.strip()[:1]]


def _client_ident(request: Request) -> str:
    """The credential the request came with: a knox token, a coordinator key, else the user or
    the address."""
    auth = request.auth
    if auth is not None and getattr(auth, "pk", None) is not None:
        return f"{type(auth).__name__}:{auth.pk}"
    if request.user and request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return f"addr:{request.META.get('REMOTE_ADDR', '')}"


class TokenQuotaThrottle(BaseThrottle):
    """At most ``RUNNER_API_QUOTA`` requests per credential per window (``"N/second|minute|
    hour|day"``); beyond that 429 with ``Retry-After`` until the window ends."""

    def allow_request(self, request: Request, view: Any) -> bool:
        limit, period = quota_parse(settings.RUNNER_API_QUOTA)
        now = time.time()
        window = int(now // period)
        self.retry_after = (window + 1) * period - now
        key = f"runner_jobs:quota:{_client_ident(request)}:{period}:{window}"
        try:
            pipe = redis_client().pipeline()
            pipe.incr(key)
            pipe.expire(key, period + 1)
            used = int(pipe.execute()[0])
        except redis.RedisError as exc:
            logger.warning("quota_unchecked", error=str(exc))
            return True
        return used <= limit

    def wait(self) -> float:
        return self.retry_after
