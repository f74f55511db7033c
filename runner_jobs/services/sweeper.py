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
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from runner_jobs import metrics
from runner_jobs.errors import BrokerUnavailableError, InvalidTransitionError
from runner_jobs.models import JobStatus, RunnerJob
from runner_jobs.registry import (
    attempt_timeout,
    celery_type_names,
    external_type_names,
    job_types,
)

from . import flow
from .bell import bell_ring
from .dispatch import (
    job_dispatch,
    job_publish,
    job_redispatch,
    redispatch_cutoff,
)
from .jobs import job_expire, job_recover_lost, job_time_out

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
    expired: int = 0
    timed_out: int = 0
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


def _each(
    queryset: QuerySet[RunnerJob],
    service: Callable[..., RunnerJob],
    refused: Callable[[], None] | None = None,
) -> int:
    """Call ``service(job_id=...)`` for each job and count those it moved (a job that moved
    meanwhile is refused under its row lock and skipped, after calling ``refused``); a broker
    refusal is raised on."""
    done = 0
    for ids in _id_batches(queryset):
        for job_id in ids:
            try:
                service(job_id=job_id)
            except InvalidTransitionError:
                if refused is not None:
                    refused()
                continue
            done += 1
    return done


def _expiring(now: datetime) -> QuerySet[RunnerJob]:
    """Jobs not started by their expiry (job_waiting_expiry_idx)."""
    return RunnerJob.objects.filter(
        status__in=[JobStatus.PENDING, JobStatus.QUEUED], expires_at__lte=now
    )


def _timed_out_ids(now: datetime) -> RawSQL:
    """Running jobs past their attempt's deadline (``jobs.attempt_deadline``, which decides
    again under the row lock), as a subquery: the job's timeout_seconds, else its type's limit
    (NULL for an external type without one: never), plus the grace of Celery-run types."""
    types = job_types()
    limits = " ".join("WHEN %s THEN %s" for _ in types)
    sql = (
        f'SELECT j.id FROM "{RunnerJob._meta.db_table}" j WHERE j.status = %s '
        f"AND j.started_at + make_interval(secs => (COALESCE(j.timeout_seconds, "
        f"CASE j.type {limits} ELSE %s END) + CASE WHEN j.type = ANY(%s) THEN 0 ELSE %s END)"
        f"::double precision) < %s"
    )
    params: list[Any] = [JobStatus.RUNNING]
    for name, job_type in types.items():
        params += [name, attempt_timeout(job_type, None)]
    params += [
        attempt_timeout(None, None),
        external_type_names(),
        settings.RUNNER_JOB_HARD_TIME_LIMIT_GRACE_SECONDS,
        now,
    ]
    return RawSQL(sql, params)


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
    ``queued`` ones, recover ``running`` jobs whose lease expired, expire jobs not started by
    their ``expires_at``, fail attempts past their time limit."""
    with _single_sweep() as acquired:
        if not acquired:
            return SweepReport(skipped=True)
        return _sweep()


def _sweep() -> SweepReport:
    report = SweepReport()
    now = timezone.now()
    try:
        report.dispatched = _each(
            RunnerJob.objects.filter(
                status=JobStatus.PENDING,
                created_at__lt=now - timedelta(seconds=PENDING_GRACE_SECONDS),
            ),
            job_dispatch,
        )
        report.redispatched = _each(
            # Only jobs that may start: a job waiting for its concurrency key is not overdue.
            RunnerJob.objects.filter(
                due_at__lt=redispatch_cutoff(),
                pk__in=flow.runnable_ids(types=celery_type_names(), now=now),
            ),
            job_redispatch,
            # A bell starts the best runnable job, not the one it was rung for: an overdue job
            # selected here may have been started by the bell of one redispatched before it,
            # whose own job is then left without one. Ring in its stead.
            refused=bell_ring,
        )
    except BrokerUnavailableError as exc:
        # Every other message would be refused too; the next pass tries again.
        logger.warning("sweep: broker down, sending nothing more: %s", exc.detail)
        report.broker_down = True
    _recover_lost(report, now)
    report.expired = _each(_expiring(now), job_expire)
    report.timed_out = _each(RunnerJob.objects.filter(pk__in=_timed_out_ids(now)), job_time_out)
    metrics.sweep_observed(
        dispatched=report.dispatched,
        redispatched=report.redispatched,
        expired=report.expired,
        timed_out=report.timed_out,
    )
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
