"""Prometheus metrics of the job domain. See docs/decisions/0060-metrics.md.

* Counters (transitions, optimistic-lock conflicts and retries, stale-lease refusals, sweeper
  recoveries, webhook deliveries) live in one Redis hash next to the broker, so one scrape of
  any web process reports what every web process and every worker on every host counted.
  An increment never fails the write it counts: with Redis unreachable it is dropped (and
  Redis is not tried again for ``COUNTER_BACKOFF_SECONDS``).
* Gauges (jobs by status and type, age of the oldest due queued job) are read from PostgreSQL
  at scrape time: live statuses exactly, through the partial index of live jobs; the terminal
  statuses, whose GROUP BY covers the whole table, from a cache refreshed at most every
  ``RUNNER_METRICS_TERMINAL_CACHE_SECONDS``.
* Queued and running jobs per workspace and type come from the same live GROUP BY. Their label
  cardinality is bounded: the ``WORKSPACE_SERIES_MAX`` workspaces with the most live jobs get
  their own series (by slug), the others are summed under ``workspace="(other)"``, and only
  (workspace, type) pairs with a queued or running job appear.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from config.redis_client import redis_client
from runner_jobs.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    JobStatus,
    RunnerJob,
    WorkerKind,
)
from runner_jobs.registry import job_types
from runner_jobs.workers import worker_counts
from workspaces.models import Workspace

logger = structlog.get_logger("runner_jobs.jobs")

COUNTERS_KEY = "runner_jobs:metrics:counters"
COUNTER_BACKOFF_SECONDS = 5.0
TERMINAL_COUNTS_CACHE_KEY = "runner_jobs:metrics:terminal_counts"
# Workspaces with series of their own in runner_jobs_workspace_jobs; the rest are summed.
WORKSPACE_SERIES_MAX = 50
# Not a slug (slugs have no parentheses), so never a real workspace's name.
OTHER_WORKSPACES = "(other)"
WORKSPACE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class CounterSpec:
    name: str
    documentation: str
    labels: tuple[str, ...] = ()


TRANSITIONS = CounterSpec(
    "runner_jobs_transitions",
    "Committed job state changes (and creations), by the event that records them.",
    ("event",),
)
OPTIMISTIC_CONFLICTS = CounterSpec(
    "runner_jobs_optimistic_lock_conflicts",
    "Versioned UPDATEs that found the job changed by someone else.",
)
OPTIMISTIC_RETRIES = CounterSpec(
    "runner_jobs_optimistic_lock_retries",
    "Conflicts followed by another attempt (the rest were refused with concurrent_update).",
)
STALE_LEASE_REFUSALS = CounterSpec(
    "runner_jobs_stale_lease_refusals",
    "Reports refused because they named an earlier attempt's lease.",
)
SWEEPER_RECOVERIES = CounterSpec(
    "runner_jobs_sweeper_recoveries",
    "Jobs the sweeper recovered, by what it did.",
    ("outcome",),
)
WEBHOOK_DELIVERIES = CounterSpec(
    "runner_jobs_webhook_deliveries",
    "Webhook delivery attempts, by outcome.",
    ("outcome",),
)
COUNTERS = (
    TRANSITIONS,
    OPTIMISTIC_CONFLICTS,
    OPTIMISTIC_RETRIES,
    STALE_LEASE_REFUSALS,
    SWEEPER_RECOVERIES,
    WEBHOOK_DELIVERIES,
)

_redis_skip_until = 0.0


def counter_inc(spec: CounterSpec, *label_values: str, amount: int = 1) -> None:
    """Add ``amount`` to a counter now, in the shared Redis hash; dropped if Redis is down."""
    counters_inc([(spec, label_values, amount)])


def counters_inc(increments: list[tuple[CounterSpec, tuple[str, ...], int]]) -> None:
    """Add to several counters in one Redis round trip; dropped if Redis is down."""
    global _redis_skip_until
    for spec, label_values, _ in increments:
        if len(label_values) != len(spec.labels):
            raise ValueError(f"{spec.name} takes labels {spec.labels}")
    if not increments or time.monotonic() < _redis_skip_until:
        return
    try:
        pipe = redis_client().pipeline(transaction=False)
        for spec, label_values, amount in increments:
            pipe.hincrby(COUNTERS_KEY, json.dumps([spec.name, *label_values]), amount)
        pipe.execute()
    except redis.RedisError as exc:
        _redis_skip_until = time.monotonic() + COUNTER_BACKOFF_SECONDS
        logger.warning(
            "metrics_counter_dropped", counters=[s.name for s, _, _ in increments], error=str(exc)
        )


def counter_inc_on_commit(spec: CounterSpec, *label_values: str) -> None:
    """Count something that exists only if the surrounding transaction commits."""
    transaction.on_commit(lambda: counter_inc(spec, *label_values), robust=True)


# --- Hooks called by the service layer (one line each) -----------------------------------------


def job_change_observed(*, job: RunnerJob, event_type: str, actor: str, transition: bool) -> None:
    """After commit: count a state change and log the write with the job's context."""
    job_changes_observed(job=job, event_types=[event_type], actor=actor, transition=transition)


def job_changes_observed(
    *, job: RunnerJob, event_types: list[str], actor: str, transition: bool
) -> None:
    """After commit: count the state changes one write made (a create: ``job.created`` and
    ``job.queued``) in one Redis round trip, and log the write once with the job's context."""
    context = {
        "job_id": str(job.pk),
        "workspace_id": job.workspace_id,
        "actor": actor,
        "event_type": event_types[-1],
        **({"event_types": event_types} if len(event_types) > 1 else {}),
        "status": job.status,
        "version": job.version,
    }

    def observed() -> None:
        if transition:
            counters_inc([(TRANSITIONS, (event_type,), 1) for event_type in event_types])
            logger.info("job_transition", **context)
        else:
            logger.debug("job_report", **context)

    # robust: nothing here may fail the write that has just committed.
    transaction.on_commit(observed, robust=True)


def jobs_changes_observed(
    *, jobs: list[RunnerJob], event_types: list[str], actor: str, transition: bool
) -> None:
    """After commit: count a batch's changes of one kind (a bulk operation's: each job had the
    same ``event_types`` written) in one Redis round trip and log the batch once, naming its
    jobs."""
    context = {
        "job_ids": [str(job.pk) for job in jobs],
        "jobs": len(jobs),
        "actor": actor,
        "event_type": event_types[-1],
        **({"event_types": event_types} if len(event_types) > 1 else {}),
    }

    def observed() -> None:
        if transition:
            counters_inc([(TRANSITIONS, (event_type,), len(jobs)) for event_type in event_types])
            logger.info("jobs_transition", **context)
        else:
            logger.debug("jobs_report", **context)

    transaction.on_commit(observed, robust=True)


def optimistic_conflict_observed(*, retried: bool) -> None:
    counter_inc(OPTIMISTIC_CONFLICTS)
    if retried:
        counter_inc(OPTIMISTIC_RETRIES)


def stale_lease_observed() -> None:
    counter_inc(STALE_LEASE_REFUSALS)


def sweeper_recovery_observed(*, outcome: str) -> None:
    """A lost worker's job: ``requeued``, or ``failed`` when no attempt is left. Counted when
    the recovery commits."""
    counter_inc_on_commit(SWEEPER_RECOVERIES, outcome)


def sweep_observed(**outcomes: int) -> None:
    """After a sweep pass: jobs it sent to the broker because their message was never sent
    (``dispatched``, they were left pending) or was lost (``redispatched``), jobs it ended
    because they were not started in time (``expired``) or ran past their time limit
    (``timed_out``)."""
    for outcome, amount in outcomes.items():
        if amount:
            counter_inc(SWEEPER_RECOVERIES, outcome, amount=amount)


def webhook_delivery_observed(*, succeeded: bool, will_retry: bool) -> None:
    """One delivery attempt: ``delivered``, ``failed`` (another attempt follows) or
    ``gave_up`` (the last attempt failed)."""
    outcome = "delivered" if succeeded else "failed" if will_retry else "gave_up"
    counter_inc(WEBHOOK_DELIVERIES, outcome)


# --- Collector ---------------------------------------------------------------------------------


def _counter_families() -> Iterator[Metric]:
    try:
        stored: dict[bytes, bytes] = redis_client().hgetall(COUNTERS_KEY)  # type: ignore[assignment]
    except redis.RedisError as exc:
        logger.warning("metrics_counters_unreadable", error=str(exc))
        return
    families = {
        spec.name: CounterMetricFamily(spec.name, spec.documentation, labels=spec.labels)
        for spec in COUNTERS
    }
    for field, value in sorted(stored.items()):
        name, *label_values = json.loads(field)
        if name in families:
            families[name].add_metric(label_values, int(value))
    yield from families.values()


def _terminal_counts() -> dict[tuple[str, str], int]:
    """Terminal jobs by (status, type): a GROUP BY over the whole table, so cached."""
    cached: list[tuple[str, str, int]] | None = cache.get(TERMINAL_COUNTS_CACHE_KEY)
    if cached is None:
        rows = (
            RunnerJob.objects.filter(status__in=TERMINAL_STATUSES)
            .order_by()
            .values_list("status", "type")
            .annotate(n=Count("pk"))
        )
        cached = [(status, type_, n) for status, type_, n in rows]
        cache.set(TERMINAL_COUNTS_CACHE_KEY, cached, settings.RUNNER_METRICS_TERMINAL_CACHE_SECONDS)
    return {(status, type_): n for status, type_, n in cached}


def _job_families() -> list[Metric]:
    now = timezone.now()
    live = (
        RunnerJob.objects.filter(status__in=ACTIVE_STATUSES)
        .order_by()
        .values_list("status", "type", "workspace_id")
        .annotate(n=Count("pk"), oldest_due=Min("due_at", filter=Q(status=JobStatus.QUEUED)))
    )
    counts: dict[tuple[str, str], int] = {}
    oldest_due: dict[str, Any] = {}
    per_workspace: dict[tuple[int, str, str], int] = {}
    for status, type_, workspace_id, n, due in live:
        counts[(status, type_)] = counts.get((status, type_), 0) + n
        if due is not None:
            oldest_due[type_] = min(due, oldest_due.get(type_, due))
        if status in WORKSPACE_STATUSES:
            per_workspace[(workspace_id, type_, status)] = n
    counts.update(_terminal_counts())
    # Every registered type appears with every status, so a rule such as "queued > 100" sees 0
    # rather than no series at all.
    types = sorted(set(job_types()) | {type_ for _, type_ in counts})
    jobs = GaugeMetricFamily(
        "runner_jobs_jobs",
        "Jobs by status and type (terminal statuses refreshed every "
        f"{settings.RUNNER_METRICS_TERMINAL_CACHE_SECONDS} s).",
        labels=("status", "type"),
    )
    age = GaugeMetricFamily(
        "runner_jobs_oldest_queued_job_age_seconds",
        "How long the oldest due queued job of each type has been waiting to start.",
        labels=("type",),
    )
    for type_ in types:
        for status in JobStatus.values:
            jobs.add_metric([status, type_], counts.get((status, type_), 0))
        due = oldest_due.get(type_)
        age.add_metric([type_], max(0.0, (now - due).total_seconds()) if due else 0.0)
    workers = GaugeMetricFamily(
        "runner_jobs_workers",
        "Known workers by kind (celery, coordinator) and liveness (seen within a lease).",
        labels=("kind", "alive"),
    )
    worker_count = worker_counts()
    for kind in WorkerKind.values:
        for alive in (True, False):
            workers.add_metric([kind, str(alive).lower()], worker_count.get((kind, alive), 0))
    return [jobs, age, _workspace_family(per_workspace), workers]


def _workspace_family(counts: dict[tuple[int, str, str], int]) -> Metric:
    """``runner_jobs_workspace_jobs``: queued and running jobs by workspace and type, for the
    ``WORKSPACE_SERIES_MAX`` busiest workspaces; the others summed as ``(other)``."""
    totals: dict[int, int] = {}
    for (workspace_id, _, _), n in counts.items():
        totals[workspace_id] = totals.get(workspace_id, 0) + n
    busiest = sorted(totals, key=lambda pk: (-totals[pk], pk))[:WORKSPACE_SERIES_MAX]
    slugs = (
        dict(Workspace.objects.filter(pk__in=busiest).values_list("pk", "slug")) if busiest else {}
    )
    series: dict[tuple[str, str], dict[str, int]] = {}
    for (workspace_id, type_, status), n in counts.items():
        pair = series.setdefault((slugs.get(workspace_id, OTHER_WORKSPACES), type_), {})
        pair[status] = pair.get(status, 0) + n
    family = GaugeMetricFamily(
        "runner_jobs_workspace_jobs",
        f"Queued and running jobs by workspace and type (the {WORKSPACE_SERIES_MAX} busiest "
        f"workspaces; the others summed as workspace={OTHER_WORKSPACES!r}).",
        labels=("workspace", "type", "status"),
    )
    for (workspace, type_), by_status in sorted(series.items()):
        for status in WORKSPACE_STATUSES:
            family.add_metric([workspace, type_, status], by_status.get(status, 0))
    return family


class RunnerJobsCollector(Collector):
    """Everything above, collected at scrape time."""

    def collect(self) -> Iterator[Metric]:
        database_up = GaugeMetricFamily(
            "runner_jobs_database_up", "1 when the job gauges could be read from PostgreSQL."
        )
        try:
            families = _job_families()
        except DatabaseError as exc:
            logger.warning("metrics_jobs_unreadable", error=str(exc))
            families = []
        database_up.add_metric([], 1 if families else 0)
        yield database_up
        yield from families
        yield from _counter_families()
