"""Scoped read tokens: a short-lived credential that lets a browser read one job and nothing else.

``POST /api/v1/runner-jobs/<id>/read-token/`` signs ``{job, user, expiry}`` with Django's signing
(HMAC-SHA256 keyed from ``SECRET_KEY``, salted so no other signed value of the project can pass
for one). The token is checked, never looked up: no database row, nothing to clean up. It is
accepted, as ``Authorization: Bearer <token>`` or ``?access_token=<token>`` (what
``EventSource`` can send), on ``GET`` of that job's detail, events and stream only; its creator's
membership is checked on every use, so it dies with their access.
See docs/decisions/0080-read-tokens.md.
"""

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core import signing
from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from runner_jobs.models import RunnerJob
from workspaces.selectors import workspaces_for_user

SALT = "runner_jobs.read_token"
TTL_DEFAULT_SECONDS = 900
TTL_MAX_SECONDS = 86_400
QUERY_PARAMETER = "access_token"
HEADER_PREFIX = "Bearer"
# The URL names (and so the only views) a read token opens, always with the job's id as ``pk``.
READ_TOKEN_URL_NAMES = frozenset({"runner-job-detail", "runner-job-events", "job-event-stream"})
READ_METHODS = frozenset({"GET", "HEAD"})


class ReadTokenError(AuthenticationFailed):
    """A read token that is malformed, tampered with, expired, for another job or URL, used to
    write, or whose creator can no longer read the job: 401."""


@dataclass(frozen=True)
class ReadGrant:
    """What a valid token says: ``user_id`` may read ``job_id`` until ``expires_at``."""

    job_id: uuid.UUID
    user_id: int
    expires_at: dt.datetime
    # A short digest of the token: names this credential (stream caps) without being it.
    key: str

    @property
    def expired(self) -> bool:
        return timezone.now() >= self.expires_at


def read_token_create(*, job: RunnerJob, user: User, ttl_seconds: int) -> tuple[str, dt.datetime]:
    """A token that lets ``user``'s read access to ``job`` be used by whoever holds it, for
    ``ttl_seconds``; returns it with its expiry (whole seconds)."""
    expires_at = (timezone.now() + dt.timedelta(seconds=ttl_seconds)).replace(microsecond=0)
    token = signing.Signer(salt=SALT).sign_object(
        {"j": str(job.pk), "u": user.pk, "e": int(expires_at.timestamp())}, compress=False
    )
    return token, expires_at


def read_token_grant(token: str) -> ReadGrant:
    """The grant of a genuine, unexpired token; ``ReadTokenError`` otherwise."""
    try:
        claims: Any = signing.Signer(salt=SALT).unsign_object(token)
        grant = ReadGrant(
            job_id=uuid.UUID(claims["j"]),
            user_id=int(claims["u"]),
            expires_at=dt.datetime.fromtimestamp(int(claims["e"]), tz=dt.UTC),
            key=hashlib.sha256(token.encode()).hexdigest()[:32],
        )
    except (signing.BadSignature, ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ReadTokenError("Invalid read token.") from exc
    if grant.expired:
        raise ReadTokenError("This read token has expired.")
    return grant


def read_grant_user(grant: ReadGrant) -> User:
    """The token's creator, if they are still active and may still read the job (membership is
    checked now, not when the token was made); ``ReadTokenError`` otherwise."""
    user = User.objects.filter(pk=grant.user_id, is_active=True).first()
    if user is None or not read_grant_still_valid(grant, user):
        raise ReadTokenError("This read token's creator can no longer read this job.")
    return user


def read_grant_still_valid(grant: ReadGrant, user: User) -> bool:
    """Unexpired, and ``user`` is still a member of the job's workspace (one query)."""
    return (
        not grant.expired
        and RunnerJob.objects.filter(
            pk=grant.job_id, workspace__in=workspaces_for_user(user)
        ).exists()
    )


def _token_from(request: Any) -> str | None:
    """The read token of a request: a ``Bearer`` header, else ``?access_token=``."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == HEADER_PREFIX.lower():
        return credentials.strip()
    token: str | None = request.GET.get(QUERY_PARAMETER)
    return token


def _names_job(pk: object, job_id: uuid.UUID) -> bool:
    try:
        return uuid.UUID(str(pk)) == job_id
    except ValueError:
        return False


class ReadTokenAuthentication(BaseAuthentication):
    """Authenticates a read token as its creator, on ``GET``/``HEAD`` of the URLs of the job it
    names and nowhere else. Works on a DRF ``Request`` and on a plain ``HttpRequest`` (the
    stream). ``request.auth`` is the ``ReadGrant``."""

    def authenticate(self, request: Request | HttpRequest) -> tuple[User, ReadGrant] | None:
        token = _token_from(request)
        if token is None:
            return None
        grant = read_token_grant(token)
        match = request.resolver_match
        if (
            request.method not in READ_METHODS
            or match is None
            or match.url_name not in READ_TOKEN_URL_NAMES
        ):
            raise ReadTokenError("A read token only reads its job, its events and its stream.")
        if not _names_job(match.kwargs.get("pk"), grant.job_id):
            raise ReadTokenError("This read token is for another job.")
        return read_grant_user(grant), grant

    def authenticate_header(self, request: Request) -> str:
        return HEADER_PREFIX


class ReadTokenScheme(OpenApiAuthenticationExtension):
    """The read token in the OpenAPI schema: a bearer header or the ``access_token`` query."""

    target_class = "runner_jobs.read_tokens.ReadTokenAuthentication"
    name = ["readTokenBearer", "readTokenQuery"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[str]]]:
        # Either way of sending it, not both.
        return [{"readTokenBearer": []}, {"readTokenQuery": []}]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, str]]:
        return [
            {"type": "http", "scheme": "bearer", "description": "A job's read token."},
            {"type": "apiKey", "in": "query", "name": QUERY_PARAMETER},
        ]
