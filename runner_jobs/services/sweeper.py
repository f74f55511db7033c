"""The sweeper: nothing is lost when the broker or a worker dies.

Run by Celery beat every ``RUNNER_SWEEP_INTERVAL_SECONDS``. Each pass works through the jobs it
looks for in batches of ``SWEEP_BATCH_SIZE`` ids (keyset by id, so a job it cannot move is not
looked at again in the same pass); every change goes through a service that re-checks the job
under its row lock, so two sweepers at once, or a sweeper racing a worker, change nothing twice.
"""

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from runner_jobs import metrics
from runner_jobs.errors import BrokerUnavailableError, InvalidTransitionError
from runner_jobs.models import JobStatus, RunnerJob
from runner_jobs.registry import celery_type_names

from . import flow
from .dispatch import (
    job_dispatch,
    job_publish,
    job_redispatch,
    redispatch_cutoff,
)
from .jobs import job_recover_lost

logger = logging.getLogger(__name__)

SWEEP_BATCH_SIZE = 200
# A new job is dispatched right after its commit; the sweeper leaves it alone this long so the
# two do not race for it (the loser would only be refused, but it costs a lock and a message).
PENDING_GRACE_SECONDS = 5
# PostgreSQL advisory lock key held by the sweep in progress ("RJSW"): a sweep that finds it
# taken (the previous one is still going, e.g. a slow database) skips instead of piling on.
SWEEP_LOCK_KEY = 0x524A5357


@dataclass
class SweepReport:
    dispatched: int = 0
    redispatched: int = 0
    requeued: int = 0
    failed: int = 0
    broker_down: bool = False
    skipped: bool = False


def _id_batches(queryset: QuerySet[RunnerJob]) -> Iterator[list[uuid.UUID]]:
    """The ids ``queryset`` selects, ``SWEEP_BATCH_SIZE`` at a time, in id order."""
    last: uuid.UUID | None = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        ids = list(page.values_list("pk", flat=True)[:SWEEP_BATCH_SIZE])
        if ids:
            yield ids
        if len(ids) < SWEEP_BATCH_SIZE:
            return
        last = ids[-1]


def _send_each(queryset: QuerySet[RunnerJob], send: Callable[..., RunnerJob]) -> int:
    """Call ``send(job_id=...)`` for each job; stop at the first broker refusal (raised on)."""
    sent = 0
    for ids in _id_batches(queryset):
        for job_id in ids:
            try:
                send(job_id=job_id)
            except InvalidTransitionError:
                continue
            sent += 1
    return sent


@contextmanager
def _single_sweep() -> Iterator[bool]:
    """Whether this sweep holds the sweep lock (until the block ends)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SWEEP_LOCK_KEY])
        (acquired,) = cursor.fetchone()
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK_KEY])


def jobs_sweep() -> SweepReport:
    """One pass, unless another is in progress: dispatch ``pending`` jobs, redispatch overdue
    ``queued`` ones, recover ``running`` jobs whose lease expired."""
    with _single_sweep() as acquired:
        if not acquired:
            return SweepReport(skipped=True)
        return _sweep()


def _sweep() -> SweepReport:
    report = SweepReport()
    now = timezone.now()
    try:
        report.dispatched = _send_each(
            RunnerJob.objects.filter(
                status=JobStatus.PENDING,
                created_at__lt=now - timedelta(seconds=PENDING_GRACE_SECONDS),
            ),
            job_dispatch,
        )
        report.redispatched = _send_each(
            # Only jobs that may start: a job waiting for its concurrency key is not overdue.
            RunnerJob.objects.filter(
                due_at__lt=redispatch_cutoff(),
                pk__in=flow.runnable_ids(types=celery_type_names(), now=now),
            ),
            job_redispatch,
        )
    except BrokerUnavailableError as exc:
        # Every other message would be refused too; the next pass tries again.
        logger.warning("sweep: broker down, sending nothing more: %s", exc.detail)
        report.broker_down = True
    _recover_lost(report, now)
    metrics.sweep_observed(dispatched=report.dispatched, redispatched=report.redispatched)
    return report


def _recover_lost(report: SweepReport, now: datetime) -> None:
    expired = RunnerJob.objects.filter(status=JobStatus.RUNNING, lease_expires_at__lt=now)
    celery_types = set(celery_type_names())
    for ids in _id_batches(expired):
        for job_id in ids:
            try:
                job = job_recover_lost(job_id=job_id)
            except InvalidTransitionError:
                continue
            if job.status == JobStatus.FAILED:
                report.failed += 1
                continue
            report.requeued += 1
            if job.type in celery_types and not report.broker_down:
                try:
                    job_publish(job)
                except BrokerUnavailableError:
                    # Queued and due now: the redispatch pass sends it once the broker is back.
                    report.broker_down = True
