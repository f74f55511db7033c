"""Request quotas for the API (fair use, not a security boundary): one per credential, and one
per client address for requests without a valid credential.

DRF's own throttles keep a list of timestamps per client in the cache and rewrite it on every
request, which costs O(rate) per request at generous rates; these are fixed-window counters in
Redis (one INCR per request), shared by every web process. If Redis cannot be reached the
request is let through: a quota is not worth an outage."""

import ipaddress
import time
from typing import Any

import redis
import structlog
from django.conf import settings
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from config.redis_client import redis_client

logger = structlog.get_logger("runner_jobs.ops")

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# An IPv6 client holds a whole /64 (its addresses cost it nothing): it is one client here.
IPV6_CLIENT_PREFIX = 64


def quota_parse(rate: str) -> tuple[int, int]:
    """``"100000/hour"`` -> (100000, 3600). The period is read by its first letter."""
    count, _, period = rate.partition("/")
    return int(count), PERIOD_SECONDS[period.strip()[:1]]


def quota_spend(ident: str, rate: str) -> float | None:
    """Count one request of ``ident`` against ``rate``: None while within it, else the seconds
    until its window ends (the ``Retry-After``)."""
    limit, period = quota_parse(rate)
    now = time.time()
    window = int(now // period)
    key = f"runner_jobs:quota:{ident}:{period}:{window}"
    try:
        pipe = redis_client().pipeline()
        pipe.incr(key)
        pipe.expire(key, period + 1)
        used = int(pipe.execute()[0])
    except redis.RedisError as exc:
        logger.warning("quota_unchecked", error=str(exc))
        return None
    return None if used <= limit else (window + 1) * period - now


def client_address(request: HttpRequest) -> str:
    """The address a request came from (``REMOTE_ADDR``: the peer, or what the proxy in front
    sets it to); an IPv6 address stands for its /64."""
    raw = request.META.get("REMOTE_ADDR", "")
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(address)


def anonymous_quota_spend(request: HttpRequest) -> float | None:
    """Count a request that brought no valid credential against its address's
    ``RUNNER_ANON_QUOTA``: None while within it, else the ``Retry-After`` seconds."""
    return quota_spend(f"addr:{client_address(request)}", settings.RUNNER_ANON_QUOTA)


def _credential_ident(request: Request) -> str | None:
    """The credential the request came with: a knox token, a coordinator key, else the user."""
    auth = request.auth
    if auth is not None and getattr(auth, "pk", None) is not None:
        return f"{type(auth).__name__}:{auth.pk}"
    if request.user and request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return None


class TokenQuotaThrottle(BaseThrottle):
    """At most ``RUNNER_API_QUOTA`` requests per credential per window (``"N/second|minute|
    hour|day"``), and ``RUNNER_ANON_QUOTA`` per client address without one; beyond that 429
    with ``Retry-After`` until the window ends.

    DRF checks throttles after authentication and permissions, so a request refused with a 401
    never gets here: the API's exception handler counts those (``anonymous_quota_spend``)."""

    retry_after: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        ident = _credential_ident(request)
        if ident is None:
            self.retry_after = anonymous_quota_spend(request)
        else:
            self.retry_after = quota_spend(ident, settings.RUNNER_API_QUOTA)
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after
