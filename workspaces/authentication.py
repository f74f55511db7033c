"""Consumer token authentication: knox's, minus a query per request it needs only with expiry,
and with a short in-process memory of tokens it has just checked."""

from typing import Any

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.models import AuthToken
from knox.settings import knox_settings

from config.credentials import CheckedCredentials

checked_tokens: CheckedCredentials[tuple[Any, AuthToken]] = CheckedCredentials()


def verified_tokens_forget() -> None:
    """Forget every remembered check (tests that revoke a token and expect it refused at once)."""
    checked_tokens.forget()


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's ``TokenAuthentication``, without its sweep of expired tokens when none can exist.

    On every request knox reads all of the user's tokens to delete the expired ones. With
    ``REST_KNOX["TOKEN_TTL"] = None`` tokens are made without an expiry, so that second query
    never finds anything. It is skipped only then, and only for a token without an expiry: set a
    TTL (or give a token an expiry) and knox's own behaviour applies unchanged.
    """

    def authenticate_credentials(self, token: bytes) -> tuple[Any, AuthToken]:
        """knox's check, remembered for ``RUNNER_AUTH_CACHE_SECONDS`` (1 s) per process: a
        client's next requests skip the token query. A revoked token (or a deactivated user)
        is refused everywhere within that time. Only successful checks are remembered."""
        knox_check = super().authenticate_credentials
        return checked_tokens.check(token, lambda: knox_check(token))

    def _cleanup_token(self, auth_token: AuthToken) -> bool:
        if knox_settings.TOKEN_TTL is None and auth_token.expiry is None:
            return False
        return bool(super()._cleanup_token(auth_token))


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of this class: knox's, under the same name."""

    target_class = "workspaces.authentication.TokenAuthentication"
