"""``X-API-Key`` authentication for the coordinator API, and only for it: the consumer API does
not list this class, so a coordinator key there is simply no credential (401), and this class
ignores ``Authorization``, so a consumer token here is none either (401)."""

from dataclasses import dataclass
from typing import Any, cast

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request
from rest_framework_api_key.permissions import KeyParser

from config.credentials import CheckedCredentials

from .models import CoordinatorKey

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class CoordinatorPrincipal:
    """``request.user`` of a coordinator request: authenticated, but not a Django user, so no
    code that expects a user (memberships, staff checks) can mistake it for one."""

    key: CoordinatorKey
    pk: None = None
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False


def _key_check(raw_key: str) -> CoordinatorKey:
    try:
        key = cast(CoordinatorKey, CoordinatorKey.objects.get_from_key(raw_key))
    except CoordinatorKey.DoesNotExist as exc:
        raise exceptions.AuthenticationFailed("Invalid or revoked API key.") from exc
    if key.has_expired:
        raise exceptions.AuthenticationFailed("This API key has expired.")
    return key


# Keys checked in the last RUNNER_AUTH_CACHE_SECONDS (config.credentials): a revoked key is
# refused everywhere within that time.
checked_keys: CheckedCredentials[CoordinatorKey] = CheckedCredentials()


class CoordinatorKeyAuthentication(authentication.BaseAuthentication):
    """A valid, unrevoked, unexpired ``CoordinatorKey`` in ``X-API-Key``; anything else there
    is a 401."""

    key_parser = KeyParser()

    def authenticate(self, request: Request) -> tuple[CoordinatorPrincipal, CoordinatorKey] | None:
        raw_key = self.key_parser.get(request)
        if not raw_key:
            return None
        key = checked_keys.check(raw_key.encode(), lambda: _key_check(raw_key))
        return CoordinatorPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        # Any value makes DRF answer 401 (with WWW-Authenticate) rather than 403.
        return API_KEY_HEADER


class HasCoordinatorKey(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, CoordinatorKey)


def request_key(request: Request) -> CoordinatorKey:
    """The key of a request that passed ``HasCoordinatorKey``."""
    key = request.auth
    assert isinstance(key, CoordinatorKey)
    return key
