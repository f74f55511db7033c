from typing import Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from coordinator.models import CoordinatorKey
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Create a coordinator API key and print it (the key alone, one line). With --workspace "
        "the key may touch only those workspaces (made if missing); without, every workspace."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The key's name; events show 'coordinator:<name>'.")
        parser.add_argument(
            "--workspace",
            action="append",
            default=[],
            metavar="SLUG",
            help="Limit the key to this workspace (repeat for more).",
        )

    def handle(self, *args: Any, name: str, workspace: list[str], **options: Any) -> None:
        max_length = cast(int, CoordinatorKey._meta.get_field("name").max_length)
        if not name.strip() or len(name) > max_length:
            raise CommandError(f"The name must be 1 to {max_length} characters.")
        with transaction.atomic():
            workspaces = []
            for slug in workspace:
                ws, created = Workspace.objects.get_or_create(slug=slug, defaults={"name": slug})
                if created:
                    self.stderr.write(f"Created workspace {slug!r}.")
                workspaces.append(ws)
            # No --workspace: a key of every workspace, said outright (never "no rows").
            key, raw_key = CoordinatorKey.objects.create_key(
                name=name, all_workspaces=not workspaces
            )
            cast(CoordinatorKey, key).workspaces.set(workspaces)
        self.stdout.write(raw_key)
