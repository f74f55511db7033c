"""Consumer token authentication: knox's, minus a query per request it needs only with expiry."""

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.models import AuthToken
from knox.settings import knox_settings


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's ``TokenAuthentication``, without its sweep of expired tokens when none can exist.

    On every request knox reads all of the user's tokens to delete the expired ones. With
    ``REST_KNOX["TOKEN_TTL"] = None`` tokens are made without an expiry, so that second query
    never finds anything. It is skipped only then, and only for a token without an expiry: set a
    TTL (or give a token an expiry) and knox's own behaviour applies unchanged.
    """

    def _cleanup_token(self, auth_token: AuthToken) -> bool:
        if knox_settings.TOKEN_TTL is None and auth_token.expiry is None:
            return False
        return bool(super()._cleanup_token(auth_token))


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of this class: knox's, under the same name."""

    target_class = "workspaces.authentication.TokenAuthentication"
