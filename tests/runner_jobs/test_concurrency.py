"""Real threads, each with its own PostgreSQL connection, racing on one job."""

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.services import locking
from runner_jobs.services.events import event_record
from runner_jobs.services.jobs import job_recover_lost
from tests.factories import UserFactory, WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db(transaction=True)


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread, released together; returns results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_fifty_racing_terminal_reports_one_winner():
    job = job_in_state("running")
    kinds = ["complete", "fail", "cancel"]

    def call(kind: str) -> Callable[[], Any]:
        if kind == "complete":
            return lambda: services.job_complete(job_id=job.pk, result={"k": 1}, actor="w")
        if kind == "fail":
            return lambda: services.job_fail(job_id=job.pk, error="e", actor="w")
        return lambda: services.job_cancel(job_id=job.pk, actor="u")

    results = race([call(kinds[i % 3]) for i in range(50)])
    winners = [r for r in results if isinstance(r, RunnerJob)]
    losers = [r for r in results if not isinstance(r, RunnerJob)]
    assert len(winners) == 1
    assert all(
        isinstance(r, services.InvalidTransitionError | services.ConcurrentUpdateError)
        for r in losers
    ), losers
    job.refresh_from_db()
    terminal = JobEvent.objects.filter(
        job=job, type__in=["job.completed", "job.failed", "job.cancelled"]
    )
    assert terminal.count() == 1
    assert job.status == winners[0].status
    # created, queued, started, and exactly one terminal change.
    assert job.version == 4 == JobEvent.objects.filter(job=job).count()


def test_fifty_racing_completions_under_row_lock_all_resolve_cleanly():
    job = job_in_state("running")
    results = race(
        [lambda: services.job_complete(job_id=job.pk, result=1, actor="w") for _ in range(50)]
    )
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"RunnerJob": 1, "InvalidTransitionError": 49}
    assert JobEvent.objects.filter(job=job, type="job.completed").count() == 1


def test_progress_reports_lose_no_update():
    """Progress commutes (the stored value is the maximum): 20 threads reporting 500 times in
    all are never refused, and every report has its event, in order."""
    job = job_in_state("running")
    reports = [(t, n) for t in range(20) for n in range(25)]

    def reporter(t: int) -> Callable[[], list[Any]]:
        def run() -> list[Any]:
            outcomes: list[Any] = []
            for n in range(25):
                try:
                    services.job_progress_update(
                        job_id=job.pk, progress=(t * 25 + n) % 101, actor="w"
                    )
                    outcomes.append((t * 25 + n) % 101)
                except services.ConcurrentUpdateError as exc:
                    outcomes.append(exc)
            return outcomes

        return run

    per_thread = race([reporter(t) for t in range(20)])
    outcomes = [o for thread in per_thread for o in thread]
    assert len(outcomes) == len(reports)
    accepted = [o for o in outcomes if isinstance(o, int)]
    assert len(accepted) == len(reports), [o for o in outcomes if not isinstance(o, int)][:3]
    job.refresh_from_db()
    progress_events = JobEvent.objects.filter(job=job, type="job.progress").count()
    assert progress_events == len(accepted)
    assert job.version == 3 + len(accepted)
    assert job.progress == max(accepted)
    ids = list(JobEvent.objects.filter(job=job).values_list("id", flat=True))
    stamps = list(
        JobEvent.objects.filter(job=job).order_by("id").values_list("timestamp", flat=True)
    )
    assert ids == sorted(ids) and stamps == sorted(stamps)


def test_ten_concurrent_idempotent_creates_make_one_job():
    ws = WorkspaceFactory()
    user = UserFactory()

    def create() -> services.JobCreateResult:
        return services.job_create(
            workspace=ws,
            spec=services.JobSpec(type="echo", payload={"a": 1}),
            actor="u",
            created_by=user,
            idempotency_key="same",
        )

    results = race([create for _ in range(10)])
    assert all(isinstance(r, services.JobCreateResult) for r in results), results
    assert sum(r.created for r in results) == 1
    assert len({r.job.pk for r in results}) == 1
    assert RunnerJob.objects.count() == 1


def test_helpers_refuse_to_run_outside_a_transaction():
    job = job_in_state("queued")
    with pytest.raises(RuntimeError):
        locking.job_lock(job.pk)
    with pytest.raises(RuntimeError):
        locking.jobs_lock_claimable(types=["echo"], limit=1, workspace_ids=None)
    with pytest.raises(RuntimeError):
        event_record(job=job, type="x.y", actor="a")


def test_optimistic_conflict_retries_then_raises(monkeypatch):
    """A writer that always loses the version race gives up after three attempts."""
    job = job_in_state("running")
    attempts = []

    def plan(current: RunnerJob) -> locking.Change:
        attempts.append(current.version)
        RunnerJob.objects.filter(pk=job.pk).update(version=current.version + 1)
        return locking.Change("x.y", {}, {"progress": 1})

    with pytest.raises(services.ConcurrentUpdateError):
        locking.job_update_optimistic(job_id=job.pk, plan=plan, actor="a")
    assert attempts == [3, 4, 5]
    assert JobEvent.objects.filter(job=job, type="x.y").count() == 0


def test_a_frozen_lock_holder_is_cut_off_so_recovery_proceeds():
    """A worker frozen inside a transaction holds the job's row lock; PostgreSQL's
    idle_in_transaction_session_timeout (configured for every connection) ends its session,
    and the sweeper's recovery, waiting on the lock, then goes through."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        assert cursor.fetchone()[0] != "0"
    job = job_in_state("running")
    RunnerJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    locked = threading.Event()
    outcome: list[Any] = []

    def frozen_holder() -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    # This test's own bound, shorter than the configured one.
                    cursor.execute("SET LOCAL idle_in_transaction_session_timeout = '1s'")
                locking.job_lock(job.pk)
                locked.set()
                time.sleep(3)  # frozen, idle in its transaction
                RunnerJob.objects.filter(pk=job.pk).exists()
        except Exception as exc:
            outcome.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=frozen_holder)
    holder.start()
    assert locked.wait(10)
    began = time.monotonic()
    recovered = job_recover_lost(job_id=job.pk)
    waited = time.monotonic() - began
    holder.join()
    assert recovered.status == "queued"
    assert 0.5 < waited < 3, waited  # waited for the lock, then was let through by the cut-off
    assert len(outcome) == 1 and isinstance(outcome[0], DatabaseError)
    assert "idle-in-transaction timeout" in str(outcome[0])


def test_racing_retries_make_exactly_one_new_job():
    """A job is retried once, decided under its row lock: of 10 racing retries (API, admin or
    anyone else) one makes the new job and nine are refused; the old job has one job.retried."""
    job = job_in_state("failed")
    results = race([lambda: services.job_retry(job_id=job.pk, actor="u") for _ in range(10)])
    new_jobs = [r for r in results if isinstance(r, RunnerJob)]
    refused = [r for r in results if isinstance(r, services.InvalidTransitionError)]
    assert (len(new_jobs), len(refused)) == (1, 9), results
    assert list(RunnerJob.objects.filter(retry_of=job).values_list("pk", flat=True)) == [
        new_jobs[0].pk
    ]
    job.refresh_from_db()
    retried = JobEvent.objects.filter(job=job, type="job.retried")
    assert [e.payload["retry_job_id"] for e in retried] == [str(new_jobs[0].pk)]
    assert job.version == JobEvent.objects.filter(job=job).count()
