from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

from workspaces.models import Workspace


class CoordinatorKey(AbstractAPIKey):
    """The API key of one external coordinator, sent as ``X-API-Key``. Only a SHA-512 digest is
    stored (djangorestframework-api-key); the key itself is shown once, when it is made.

    ``workspaces`` limits the key to those workspaces' jobs; a key with none may touch every
    workspace. ``revoked`` (inherited) cannot be undone.
    """

    workspaces = models.ManyToManyField(
        Workspace,
        blank=True,
        related_name="coordinator_keys",
        help_text="The workspaces this key may touch; none selected means every workspace.",
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "coordinator key"
        verbose_name_plural = "coordinator keys"

    @property
    def actor(self) -> str:
        """The actor of every event this key's reports write."""
        return f"coordinator:{self.name}"
