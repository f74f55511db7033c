"""Retention: delete terminal jobs that ended long ago, with their steps and events, in batches.

Each batch is its own short transaction: the rows are locked with ``SKIP LOCKED`` (a job being
retried right now is left for the next run) and re-checked as terminal under the lock, so a job
that is not terminal is never deleted. A kept job that retried a pruned one keeps its row and
loses the link (``retry_of`` is ``SET_NULL`` by the model). See docs/decisions/0061-retention.md.
"""

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from runner_jobs.models import TERMINAL_STATUSES, JobEvent, JobStep, RunnerJob

PRUNE_BATCH_SIZE = 500


@dataclass(frozen=True)
class PruneResult:
    """Rows deleted (in a dry run: that would be) and the batches it took."""

    jobs: int
    steps: int
    events: int
    batches: int
    dry_run: bool = False
    # Rows of other models deleted with the jobs (e.g. webhook deliveries), by model label.
    other: dict[str, int] = field(default_factory=dict)


def _prunable(cutoff: datetime) -> QuerySet[RunnerJob]:
    # created_at < cutoff is implied by completed_at < cutoff; it lets PostgreSQL walk the
    # created_at index from the oldest job instead of scanning the table.
    return RunnerJob.objects.filter(
        created_at__lt=cutoff, completed_at__lt=cutoff, status__in=TERMINAL_STATUSES
    )


def jobs_prune(
    *, older_than: timedelta, dry_run: bool = False, batch_size: int = PRUNE_BATCH_SIZE
) -> PruneResult:
    """Delete jobs in a terminal state whose ``completed_at`` is more than ``older_than`` ago,
    with their steps and events, ``batch_size`` jobs per transaction. ``dry_run`` only counts."""
    if older_than <= timedelta(0) or batch_size < 1:
        raise ValueError("older_than and batch_size must be positive")
    cutoff = timezone.now() - older_than
    if dry_run:
        jobs = _prunable(cutoff)
        return PruneResult(
            jobs=jobs.count(),
            steps=JobStep.objects.filter(job__in=jobs).count(),
            events=JobEvent.objects.filter(job__in=jobs).count(),
            batches=0,
            dry_run=True,
        )
    deleted: Counter[str] = Counter()
    batches = 0
    after = Q()
    while batch := _prune_batch(_prunable(cutoff).filter(after), batch_size, deleted):
        batches += 1
        last_pk, last_created = batch[-1]
        # Keyset: the next batch starts after this one, past any row skipped as locked.
        after = Q(created_at__gt=last_created) | Q(created_at=last_created, pk__gt=last_pk)
    return PruneResult(
        jobs=deleted.pop(RunnerJob._meta.label, 0),
        steps=deleted.pop(JobStep._meta.label, 0),
        events=deleted.pop(JobEvent._meta.label, 0),
        batches=batches,
        other={label: n for label, n in deleted.items() if n},
    )


def _prune_batch(
    candidates: QuerySet[RunnerJob], batch_size: int, deleted: Counter[str]
) -> list[tuple[uuid.UUID, datetime]]:
    """Lock and delete the next ``batch_size`` candidates in one transaction; returns their
    (id, created_at), oldest first, and adds the deleted rows to ``deleted``."""
    with transaction.atomic():
        batch = list(
            candidates.order_by("created_at", "pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", "created_at")[:batch_size]
        )
        ids = [pk for pk, _ in batch]
        # Children first, each one DELETE ... WHERE job_id IN (...), so the jobs' own delete
        # finds nothing left to cascade or to SET_NULL.
        for queryset in (
            JobEvent.objects.filter(job_id__in=ids),
            JobStep.objects.filter(job_id__in=ids),
            RunnerJob.objects.filter(pk__in=ids),
        ):
            deleted.update(queryset.delete()[1])
    return batch
