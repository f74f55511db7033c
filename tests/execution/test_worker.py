"""End to end: real ``celery -A config worker`` processes on the real Redis and the test
database. Short leases, sweeps and backoffs (conftest.WORKER_ENV) keep each test to seconds."""

import json
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.services.dispatch import job_publish
from tests.execution.conftest import (
    TEST_LEASE_SECONDS,
    TEST_SWEEP_INTERVAL_SECONDS,
    broker_url,
    wait_for,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "cancelled", "expired")


def create(workspace, type: str, payload: dict, **spec_fields) -> RunnerJob:
    return services.job_create(
        workspace=workspace,
        spec=services.JobSpec(type=type, payload=payload, **spec_fields),
        actor="user:alice",
    ).job


def finished(job: RunnerJob, timeout: float = 20) -> RunnerJob:
    return wait_for(
        lambda: RunnerJob.objects.filter(pk=job.pk, status__in=TERMINAL).first(), timeout=timeout
    )


def event_types(job: RunnerJob) -> list[str]:
    return list(JobEvent.objects.filter(job=job).values_list("type", flat=True))


@pytest.mark.usefixtures("class_worker")
class TestBuiltInTypes:
    def test_echo_completes_with_its_payload_as_result(self, workspace):
        job = create(workspace, "echo", {"greeting": "hi", "n": [1, 2]})
        job = finished(job)
        assert (job.status, job.result, job.attempts, job.progress) == (
            "completed",
            {"greeting": "hi", "n": [1, 2]},
            1,
            100,
        )
        assert event_types(job) == ["job.created", "job.queued", "job.started", "job.completed"]
        assert job.version == 4
        assert job.lease_token is None

    def test_fail_fails_at_once_with_its_message_and_one_attempt(self, workspace):
        job = finished(create(workspace, "fail", {"message": "disk on fire"}))
        assert (job.status, job.error, job.attempts) == ("failed", "disk on fire", 1)
        assert event_types(job) == ["job.created", "job.queued", "job.started", "job.failed"]

    def test_flaky_retries_with_growing_delays_then_completes_on_attempt_three(self, workspace):
        job = finished(create(workspace, "flaky", {"failures": 2}))
        assert (job.status, job.attempts, job.result) == (
            "completed",
            3,
            {"attempts": 3, "failures": 2},
        )
        retries = list(JobEvent.objects.filter(job=job, type="job.retry_scheduled"))
        assert [e.payload["attempt"] for e in retries] == [1, 2]
        assert [e.payload["error"] for e in retries] == [
            "Transient failure 1 of 2.",
            "Transient failure 2 of 2.",
        ]
        first, second = (e.payload["delay"] for e in retries)
        # RUNNER_RETRY_BACKOFF_SECONDS=1: 1 s then 2 s, each jittered within its upper half.
        assert 0.5 <= first <= 1 <= second <= 2 and first < second
        started = list(JobEvent.objects.filter(job=job, type="job.started"))
        assert [e.payload["attempt"] for e in started] == [1, 2, 3]
        # Each retry really waited its delay before the next attempt started.
        for retry, start in zip(retries, started[1:], strict=True):
            waited = (start.timestamp - retry.timestamp).total_seconds()
            assert waited >= retry.payload["delay"] - 0.05, (waited, retry.payload)

    def test_flaky_beyond_max_attempts_fails_with_the_last_error(self, workspace):
        job = finished(create(workspace, "flaky", {"failures": 5}, max_attempts=2))
        assert (job.status, job.attempts, job.error) == ("failed", 2, "Transient failure 2 of 5.")
        assert event_types(job).count("job.retry_scheduled") == 1

    def test_sleep_reports_steps_and_progress(self, workspace):
        job = finished(create(workspace, "sleep", {"seconds": 1, "steps": 2}))
        assert (job.status, job.progress) == ("completed", 100)
        progress = JobEvent.objects.filter(job=job, type="job.progress")
        assert [e.payload["progress"] for e in progress] == [50, 100]
        steps = list(job.steps.order_by("ordinal").values_list("name", "status"))
        assert steps == [("sleep 1/2", "completed"), ("sleep 2/2", "completed")]


def test_cancelled_sleep_stops_within_two_seconds_and_stays_cancelled(start_worker, workspace):
    start_worker(concurrency=1)
    job = create(workspace, "sleep", {"seconds": 30, "steps": 3})
    wait_for(lambda: RunnerJob.objects.filter(pk=job.pk, status="running").exists(), timeout=15)
    services.job_cancel(job_id=job.pk, actor="user:alice")
    cancelled_at = time.monotonic()
    # The only pool slot frees up only once the sleep handler stopped.
    echo = finished(create(workspace, "echo", {}), timeout=5)
    assert echo.status == "completed"
    assert time.monotonic() - cancelled_at < 2
    time.sleep(1)
    job.refresh_from_db()
    assert job.status == "cancelled"
    types = event_types(job)
    assert "job.completed" not in types
    assert types[-1] == "job.cancelled"


def test_attempt_past_its_time_limit_fails_saying_so(start_worker, workspace):
    start_worker(concurrency=1, RUNNER_JOB_TIME_LIMIT_SECONDS="2")
    job = finished(create(workspace, "sleep", {"seconds": 60, "steps": 30}), timeout=30)
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.error == "Time limit exceeded: the attempt ran longer than 2 s."


def test_a_time_limit_that_cuts_a_query_short_still_fails_the_job(
    start_worker, workspace, settings
):
    types = {"busy": {"handler": "tests.execution.handlers.busy_querying"}}
    settings.RUNNER_JOB_TYPES = types
    start_worker(
        concurrency=1, RUNNER_JOB_TIME_LIMIT_SECONDS="1", RUNNER_JOB_TYPES=json.dumps(types)
    )
    job = finished(create(workspace, "busy", {}), timeout=15)
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.error == "Time limit exceeded: the attempt ran longer than 1 s."


def test_message_for_a_job_cancelled_while_queued_does_nothing(start_worker, workspace):
    job = create(workspace, "echo", {"x": 1})
    job.refresh_from_db()
    assert job.status == "queued"
    services.job_cancel(job_id=job.pk, actor="user:alice")
    done = create(workspace, "echo", {})
    start_worker(concurrency=1)
    done = finished(done)
    # A duplicate delivery of a finished job's message does nothing either.
    job_publish(done)
    job_publish(job)
    later = finished(create(workspace, "echo", {}))
    assert later.status == "completed"
    assert event_types(job) == ["job.created", "job.queued", "job.cancelled"]
    assert event_types(done) == ["job.created", "job.queued", "job.started", "job.completed"]


def test_higher_priority_runs_first(start_worker, workspace):
    jobs = [create(workspace, "echo", {"p": p}, priority=p) for p in (3, 0, 9, 5, 7, 1)]
    start_worker(concurrency=1)
    for job in jobs:
        finished(job)
    order = RunnerJob.objects.filter(pk__in=[j.pk for j in jobs]).order_by("started_at")
    assert [j.priority for j in order] == [9, 7, 5, 3, 1, 0]


def test_lost_message_is_sent_again_by_the_sweeper(start_worker, workspace):
    from config.celery import app as celery_app

    job = create(workspace, "echo", {"lost": True})
    celery_app.control.purge()  # as if Redis restarted without persistence
    start_worker(concurrency=1, RUNNER_REDISPATCH_AFTER_SECONDS="3")
    job = finished(job, timeout=15)
    assert job.status == "completed"
    assert event_types(job) == [
        "job.created",
        "job.queued",
        "job.redispatched",
        "job.started",
        "job.completed",
    ]


def test_sigkilled_worker_loses_no_job_and_completes_none_twice(start_worker, workspace):
    first = start_worker(concurrency=20)
    # Long enough that the first job is still running when the twentieth starts (a loaded
    # machine takes a while to start 20).
    jobs = [create(workspace, "sleep", {"seconds": 15, "steps": 5}) for _ in range(20)]
    wait_for(
        lambda: (
            RunnerJob.objects.filter(pk__in=[j.pk for j in jobs], status="running").count() == 20
        ),
        timeout=60,
    )
    first.kill()
    killed_at = timezone.now()
    start_worker(concurrency=20)
    ready_at = timezone.now()
    for job in jobs:
        finished(job, timeout=120)
    recovered = JobEvent.objects.filter(
        job__in=jobs, type="job.queued", payload__reason="lease_expired"
    )
    assert recovered.count() == 20
    # A lease runs out at most a lease after the kill, and the next sweep of the new worker
    # requeues the job; the slack covers twenty recoveries on a loaded machine.
    last_recovery = max(e.timestamp for e in recovered)
    sweeper_from = max(killed_at + timedelta(seconds=TEST_LEASE_SECONDS), ready_at)
    print(
        f"new worker ready {(ready_at - killed_at).total_seconds():.1f} s after the kill; "
        f"all 20 requeued {(last_recovery - killed_at).total_seconds():.1f} s after it"
    )
    assert (last_recovery - sweeper_from).total_seconds() < TEST_SWEEP_INTERVAL_SECONDS + 10
    jobs = list(RunnerJob.objects.filter(pk__in=[j.pk for j in jobs]))
    assert Counter(j.status for j in jobs) == {"completed": 20}
    assert all(j.attempts == 2 for j in jobs)
    completions = Counter(
        JobEvent.objects.filter(job__in=jobs, type="job.completed").values_list("job_id", flat=True)
    )
    assert set(completions.values()) == {1} and len(completions) == 20


def test_jobs_created_while_redis_is_down_run_once_it_is_back(
    start_worker, throwaway_redis, workspace
):
    with broker_url(throwaway_redis.url):
        started = time.monotonic()
        jobs = [create(workspace, "echo", {"i": i}) for i in range(20)]
        assert time.monotonic() - started < 20 * 0.5
        # Committed queued; their messages were not sent, so they are overdue for the sweeper.
        assert set(
            RunnerJob.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
        ) == {"queued"}
        throwaway_redis.start()
        start_worker(redis_url=throwaway_redis.url, concurrency=4)
        for job in jobs:
            assert finished(job, timeout=20).status == "completed"
