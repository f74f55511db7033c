from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

from workspaces.models import Workspace


class CoordinatorKey(AbstractAPIKey):
    """The API key of one external coordinator, sent as ``X-API-Key``. Only a SHA-512 digest is
    stored (djangorestframework-api-key); the key itself is shown once, when it is made.

    A key may touch every workspace only when ``all_workspaces`` says so; otherwise it is
    limited to ``workspaces``, and a limited key whose workspaces are all gone touches none (the
    scope never widens by rows disappearing). ``revoked`` (inherited) cannot be undone.
    """

    all_workspaces = models.BooleanField(
        "every workspace",
        default=False,
        db_default=False,
        help_text="The key may touch every workspace, present and future.",
    )
    workspaces = models.ManyToManyField(
        Workspace,
        blank=True,
        related_name="coordinator_keys",
        help_text="The workspaces a limited key may touch.",
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "coordinator key"
        verbose_name_plural = "coordinator keys"

    @property
    def actor(self) -> str:
        """The actor of every event this key's reports write."""
        return f"coordinator:{self.name}"
