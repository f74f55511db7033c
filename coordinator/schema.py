"""How the OpenAPI schema describes ``X-API-Key`` (drf-spectacular finds this on import)."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from .authentication import API_KEY_HEADER


class CoordinatorKeyScheme(OpenApiAuthenticationExtension):
    target_class = "coordinator.authentication.CoordinatorKeyAuthentication"
    name = "CoordinatorKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
