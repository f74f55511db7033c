"""Make a consumer API token: ``create_api_token alice --workspace acme --role member``."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from knox.models import AuthToken

from workspaces.models import Membership, Workspace


class Command(BaseCommand):
    help = (
        "Create the user (and the workspace and membership, with --workspace) if needed, and "
        "print a new API token for `Authorization: Token <token>`: one line, the token alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--workspace", help="Workspace slug; created if missing.")
        parser.add_argument(
            "--role",
            choices=Membership.Role.values,
            help="The user's role in --workspace (default: member; sets an existing one).",
        )

    def handle(
        self, *args: Any, username: str, workspace: str | None, role: str | None, **options: Any
    ) -> None:
        if role and not workspace:
            raise CommandError("--role needs --workspace.")
        if workspace:
            try:
                Workspace._meta.get_field("slug").clean(workspace, None)
            except ValidationError as exc:
                raise CommandError(f"--workspace: {' '.join(exc.messages)}") from exc
        with transaction.atomic():
            user, created = get_user_model().objects.get_or_create(username=username)
            if created:
                # A token-only user: nobody can log in with a password until one is set.
                user.set_unusable_password()
                user.save(update_fields=["password"])
            if workspace:
                ws, _ = Workspace.objects.get_or_create(
                    slug=workspace, defaults={"name": workspace}
                )
                membership, created = Membership.objects.get_or_create(
                    user=user, workspace=ws, defaults={"role": role or Membership.Role.MEMBER}
                )
                if not created and role and membership.role != role:
                    membership.role = role
                    membership.save(update_fields=["role"])
            _, token = AuthToken.objects.create(user)
        self.stdout.write(token)
