"""``manage.py prune_jobs --older-than 30d [--dry-run] [--batch-size N]``."""

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runner_jobs.services import PRUNE_BATCH_SIZE, jobs_prune

AGE_PATTERN = re.compile(r"^(\d+)([smhdw])$")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def age_parse(value: str) -> timedelta:
    """``"30d"`` -> 30 days; units s, m, h, d, w."""
    match = AGE_PATTERN.match(value.strip())
    if not match or int(match[1]) == 0:
        raise CommandError(f"--older-than must look like 30d, 12h or 90m (got {value!r}).")
    return timedelta(**{AGE_UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = (
        "Delete jobs that ended (completed, failed, cancelled) more than --older-than ago, "
        "with their steps and events, in batches. Never touches a job that has not ended."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, help="age, e.g. 30d, 12h, 90m")
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")
        parser.add_argument("--batch-size", type=int, default=PRUNE_BATCH_SIZE)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        result = jobs_prune(
            older_than=age_parse(options["older_than"]),
            dry_run=options["dry_run"],
            batch_size=options["batch_size"],
        )
        counts = f"{result.jobs} jobs, {result.steps} steps, {result.events} events"
        if result.dry_run:
            self.stdout.write(f"Would delete {counts} (dry run, nothing deleted).")
            return
        others = "".join(f", {n} {label}" for label, n in sorted(result.other.items()))
        self.stdout.write(f"Deleted {counts}{others} in {result.batches} batches.")
