"""Who may hold a stream open, for how long, and how many at once: shared by every event stream.

A stream is authenticated once when it opens, like any API request (a knox token, a job's read
token, or a session), but it may stay open for hours; so while it is open the credential and the
reader's access are checked again at least every keep-alive (``StreamAccess.still_valid``), and
the stream ends once either is gone: a revoked token, an expired read token, a logout, a
deactivated user, a removed membership.

Each credential may hold ``RUNNER_STREAM_MAX_PER_TOKEN`` streams open at once (429 past it).
The open streams are counted in Redis, shared by every web process, as one sorted set per
credential whose members are the open streams and whose scores are their lease deadlines: an
open stream renews its lease at each check, a closed one removes itself, and one whose process
died stops counting when its lease runs out (``SLOT_LEASE_KEEPALIVES`` keep-alives). With Redis
unreachable the cap is not enforced: a fair-use limit is not worth refusing every stream.
"""

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from math import ceil
from typing import Any

import redis
import structlog
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import User
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.exceptions import AuthenticationFailed

from config.redis_client import redis_client
from runner_jobs.read_tokens import ReadGrant, ReadTokenAuthentication
from workspaces.authentication import TokenAuthentication

logger = structlog.get_logger("runner_jobs.streams")

# A stream's slot is renewed at every access check (each keep-alive period) and lapses after
# this many periods without one: a process that died frees its slots within about a minute.
SLOT_LEASE_KEEPALIVES = 3
SLOTS_KEY = "runner_jobs:stream_slots:{credential}"

# Atomic count-and-take (two opens racing for the last slot cannot both get it), on Redis' clock
# so that every web host agrees on which leases ran out.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""
_RENEW = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZADD', KEYS[1], 'XX', t + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def refusal(status: int, code: str, detail: str, **headers: str) -> JsonResponse:
    """A stream's error answer, in the API's shape."""
    response = JsonResponse({"detail": detail, "code": code}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


@dataclass
class StreamAccess:
    """An open stream's reader and credential, and its slot in the per-credential count."""

    user: User
    # Names the credential (a digest, never the secret): the unit of the stream cap.
    credential: str
    # Is the credential itself still good (token not revoked, session not ended)? ORM, sync.
    credential_alive: Callable[[], bool]
    # May ``user`` still read what this stream shows (membership)? ORM, sync.
    readable: Callable[[User], bool]
    slot: str | None = field(default=None)

    @property
    def _slots_key(self) -> str:
        return SLOTS_KEY.format(credential=self.credential)

    @staticmethod
    def _lease_seconds() -> float:
        return SLOT_LEASE_KEEPALIVES * float(settings.RUNNER_STREAM_KEEPALIVE_SECONDS)

    def still_valid(self) -> bool:
        """Checked when the stream opens and at least every keep-alive after (sync, ORM): the
        credential, the user and their access are all still there. Renews the slot."""
        valid = (
            self.credential_alive()
            and User.objects.filter(pk=self.user.pk, is_active=True).exists()
            and self.readable(self.user)
        )
        if valid and self.slot is not None:
            self._redis(_RENEW, self.slot, self._lease_seconds())
        return valid

    def acquire_slot(self) -> bool:
        """Take one of the credential's stream slots; False when all are taken."""
        limit = settings.RUNNER_STREAM_MAX_PER_TOKEN
        if not limit:
            return True
        slot = uuid.uuid4().hex
        taken = self._redis(_ACQUIRE, slot, limit, self._lease_seconds())
        if taken == 0:
            return False
        self.slot = slot if taken == 1 else None
        return True

    def release_slot(self) -> None:
        if self.slot is not None:
            try:
                redis_client().zrem(self._slots_key, self.slot)
            except redis.RedisError as exc:
                logger.warning("stream_slot_unreleased", error=str(exc))
            self.slot = None

    def _redis(self, script: str, *args: Any) -> int | None:
        """Run a slot script; None when Redis cannot be reached (then nothing is enforced)."""
        try:
            return int(redis_client().eval(script, 1, self._slots_key, *args))
        except redis.RedisError as exc:
            logger.warning("stream_slots_unchecked", error=str(exc))
            return None


def too_many_streams() -> JsonResponse:
    limit = settings.RUNNER_STREAM_MAX_PER_TOKEN
    return refusal(
        429,
        "too_many_streams",
        f"This credential already has {limit} streams open; close one first.",
        Retry_After=str(ceil(settings.RUNNER_STREAM_KEEPALIVE_SECONDS)),
    )


def _knox_alive(token: AuthToken) -> Callable[[], bool]:
    return lambda: (
        AuthToken.objects.filter(digest=token.digest)
        .filter(Q(expiry__isnull=True) | Q(expiry__gt=timezone.now()))
        .exists()
    )


def _read_token_alive(grant: ReadGrant) -> Callable[[], bool]:
    return lambda: not grant.expired


def _session_alive(session_key: str, user: User) -> Callable[[], bool]:
    engine = import_module(settings.SESSION_ENGINE)

    def alive() -> bool:
        return bool(engine.SessionStore(session_key).get(SESSION_KEY) == str(user.pk))

    return alive


def stream_authenticate(
    request: HttpRequest, *, readable: Callable[[User], bool]
) -> StreamAccess | JsonResponse:
    """The stream's reader, by the API's rules (sync, ORM): a knox token, a read token (which
    also checks that it names this stream's job) or a session; a 401 without one.

    ``readable(user)`` is what the user must be allowed to read, checked again while the
    stream is open; the caller decides what a failed check answers at open (404 for a job)."""
    header = request.headers.get("Authorization", "")
    # Tokens are ASCII; Django hands a header over as Latin-1, so a non-UTF-8 byte arrives as
    # a character that knox would fail to decode (a 500 before this check).
    if not (header.isascii() and header.isprintable()):
        return refusal(401, "authentication_failed", "Invalid Authorization header.")
    try:
        authenticated = TokenAuthentication().authenticate(request)
        if authenticated is None:
            authenticated = ReadTokenAuthentication().authenticate(request)
    except AuthenticationFailed as exc:
        return refusal(401, "authentication_failed", str(exc.detail))
    if authenticated is not None:
        user, auth = authenticated
        if isinstance(auth, ReadGrant):
            # Its job is this stream's (checked above), so ``readable`` is its creator's access.
            return StreamAccess(
                user=user,
                credential=f"read:{auth.key}",
                credential_alive=_read_token_alive(auth),
                readable=readable,
            )
        return StreamAccess(
            user=user,
            credential=f"token:{auth.digest[:32]}",
            credential_alive=_knox_alive(auth),
            readable=readable,
        )
    session_user: Any = request.user
    session_key = request.session.session_key
    if not session_user.is_authenticated or session_key is None:
        return refusal(401, "not_authenticated", "Authentication credentials were not provided.")
    return StreamAccess(
        user=session_user,
        credential=f"session:{_digest(session_key)}",
        credential_alive=_session_alive(session_key, session_user),
        readable=readable,
    )
