"""Flow control with real Celery workers, Redis and PostgreSQL (SPEC §8): concurrency keys and
fairness between workspaces, measured from the jobs' events."""

import time
from datetime import timedelta
from itertools import pairwise

import pytest
from django.db.models import Max, Min
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.services.policies import job_type_policy_update
from tests.execution.conftest import wait_for
from tests.execution.test_worker import create, finished
from tests.factories import WorkspaceFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TERMINAL_EVENTS = ("job.completed", "job.failed", "job.cancelled", "job.expired")


def most_running_at_once(jobs: list[RunnerJob]) -> int:
    """The largest number of ``jobs`` running at one moment, from their ``job.started`` and
    terminal events (an end at the same instant as a start counts first)."""
    marks = []
    for event in JobEvent.objects.filter(job__in=jobs, type__in=("job.started", *TERMINAL_EVENTS)):
        marks.append((event.timestamp, 1 if event.type == "job.started" else -1))
    running = most = 0
    for _, step in sorted(marks, key=lambda mark: (mark[0], mark[1])):
        running += step
        most = max(most, running)
    return most


def test_twenty_keyed_jobs_run_two_at_a_time_and_finish_in_about_ten_seconds(
    start_worker, workspace
):
    start_worker(concurrency=4)
    jobs = [
        create(workspace, "sleep", {"seconds": 1}, concurrency_key="acct-42", concurrency_limit=2)
        for _ in range(20)
    ]
    done = [finished(job, timeout=40) for job in jobs]
    assert {job.status for job in done} == {"completed"}
    assert most_running_at_once(jobs) == 2
    span = RunnerJob.objects.filter(pk__in=[j.pk for j in jobs]).aggregate(
        first=Min("started_at"), last=Max("completed_at")
    )
    elapsed = (span["last"] - span["first"]).total_seconds()
    # Ten rounds of one second; a freed slot is taken within about a second (never a sweep).
    assert 10 <= elapsed < 16, elapsed
    redispatched = JobEvent.objects.filter(job__in=jobs, type="job.redispatched").count()
    assert redispatched == 0


def test_one_workspace_backlog_does_not_hold_up_another(start_worker):
    """A's 300 queued jobs, then B's one: B's job starts within about a second, before A's
    backlog has drained."""
    a, b = WorkspaceFactory(), WorkspaceFactory()
    start_worker(concurrency=2)
    backlog = [create(a, "sleep", {"seconds": 0.2}) for _ in range(300)]
    time.sleep(1)
    mine = create(b, "echo", {"b": 1})
    mine = finished(mine, timeout=10)
    wait = (mine.started_at - mine.created_at).total_seconds()
    assert wait < 1.5, wait
    assert RunnerJob.objects.filter(pk__in=[j.pk for j in backlog], status="queued").exists()


def test_a_job_to_run_later_starts_about_a_second_after_its_time_not_before(
    start_worker, workspace
):
    start_worker(concurrency=2)
    run_at = timezone.now() + timedelta(seconds=4)
    job = create(workspace, "echo", {"later": True}, run_at=run_at)
    time.sleep(2)
    job.refresh_from_db()
    assert job.status == "queued"
    # Bells rung just before its time (other jobs' creates) must not start it early.
    time.sleep(1.3)
    others = [create(workspace, "echo", {"other": n}) for n in range(3)]
    job = finished(job, timeout=20)
    assert {finished(other).status for other in others} == {"completed"}
    late = (job.started_at - run_at).total_seconds()
    assert job.status == "completed" and 0 <= late < 1.5, late


def test_an_attempt_past_its_own_timeout_fails_saying_so(start_worker, workspace):
    """The job's timeout_seconds (1 s) overrides the worker's default limit (60 s here)."""
    start_worker(concurrency=1)
    job = finished(create(workspace, "sleep", {"seconds": 10}, timeout_seconds=1), timeout=15)
    assert job.status == "failed"
    assert job.error == "Time limit exceeded: the attempt ran longer than 1 s."
    assert (job.completed_at - job.started_at).total_seconds() < 3
    # The next attempt on the same process is not interrupted by a leftover alarm.
    quick = finished(create(workspace, "sleep", {"seconds": 1.5}, timeout_seconds=2))
    assert quick.status == "completed"


def test_a_job_behind_a_full_key_expires_and_never_starts(start_worker, workspace):
    """A ttl of 2 s behind a key whose only slot is held for 6 s: ended ``expired`` by the
    sweeper (1 s here) and never started, while the slot holder completes."""
    start_worker(concurrency=2)
    holder = create(workspace, "sleep", {"seconds": 6}, concurrency_key="k")
    wait_for(lambda: RunnerJob.objects.filter(pk=holder.pk, status="running").exists(), timeout=10)
    waiting = create(workspace, "echo", {}, concurrency_key="k", ttl_seconds=2)
    waiting = finished(waiting, timeout=10)
    assert waiting.status == "expired"
    assert waiting.started_at is None and waiting.attempts == 0
    assert (waiting.completed_at - waiting.expires_at).total_seconds() < 2.5
    assert [e.type for e in JobEvent.objects.filter(job=waiting)] == [
        "job.created",
        "job.queued",
        "job.expired",
    ]
    assert finished(holder).status == "completed"


def test_a_paused_type_waits_and_starts_within_two_seconds_of_a_resume(start_worker):
    """Paused in A: A's jobs of the type wait (B's start), and start within about two seconds
    of the resume (its bells), not at a sweep."""
    a, b = WorkspaceFactory(), WorkspaceFactory()
    job_type_policy_update(workspace=a, type="echo", actor="user:ada", paused=True)
    start_worker(concurrency=2)
    held = [create(a, "echo", {"n": n}) for n in range(5)]
    elsewhere = finished(create(b, "echo", {"b": 1}), timeout=10)
    assert elsewhere.status == "completed"
    time.sleep(1.5)
    assert set(
        RunnerJob.objects.filter(pk__in=[j.pk for j in held]).values_list("status", flat=True)
    ) == {"queued"}
    resumed_at = timezone.now()
    job_type_policy_update(workspace=a, type="echo", actor="user:ada", paused=False)
    done = [finished(job, timeout=10) for job in held]
    assert {job.status for job in done} == {"completed"}
    latest = max((job.started_at - resumed_at).total_seconds() for job in done)
    assert latest < 2, latest
    assert not JobEvent.objects.filter(job__in=held, type="job.redispatched").exists()


def test_max_running_one_runs_a_type_one_at_a_time_and_the_next_starts_within_a_second(
    start_worker, workspace
):
    job_type_policy_update(workspace=workspace, type="sleep", actor="user:ada", max_running=1)
    start_worker(concurrency=4)
    jobs = [create(workspace, "sleep", {"seconds": 0.5}) for _ in range(5)]
    done = sorted((finished(job, timeout=20) for job in jobs), key=lambda job: str(job.started_at))
    assert {job.status for job in done} == {"completed"}
    assert most_running_at_once(jobs) == 1
    gaps = [
        (after.started_at - before.completed_at).total_seconds() for before, after in pairwise(done)
    ]
    assert max(gaps) < 1, gaps
    assert not JobEvent.objects.filter(job__in=jobs, type="job.redispatched").exists()


def test_a_job_behind_a_paused_type_expires_never_starts_and_its_retry_runs(
    start_worker, workspace
):
    """SPEC §8: a ttl job behind a paused type ends ``expired`` (``job.expired``) without ever
    starting; its retry is a new job, which runs once the type is resumed."""
    job_type_policy_update(workspace=workspace, type="echo", actor="user:ada", paused=True)
    start_worker(concurrency=2)
    waiting = finished(create(workspace, "echo", {"n": 1}, ttl_seconds=2), timeout=10)
    assert waiting.status == "expired"
    assert waiting.started_at is None and waiting.attempts == 0
    assert [e.type for e in JobEvent.objects.filter(job=waiting)] == [
        "job.created",
        "job.queued",
        "job.expired",
    ]
    job_type_policy_update(workspace=workspace, type="echo", actor="user:ada", paused=False)
    waiting.refresh_from_db()
    assert waiting.status == "expired"  # a resume does not bring an expired job back
    retry = services.job_retry(job_id=waiting.pk, actor="user:ada")
    assert retry.pk != waiting.pk and retry.retry_of_id == waiting.pk
    assert finished(retry, timeout=10).status == "completed"
