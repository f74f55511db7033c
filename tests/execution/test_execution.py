"""One attempt run in this process (``job_execute``), against the real database: the outcome of
each kind of handler, the context, the heartbeat, and messages that must do nothing."""

import threading
import time
from datetime import timedelta

import pytest
from celery.exceptions import TimeLimitExceeded
from django.db import connection, transaction
from django.utils import timezone

from runner_jobs import execution, services
from runner_jobs.execution import TransientJobError, backoff_delay, job_execute
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.services.locking import job_lock
from runner_jobs.tasks import execute_job_task, sweep_task
from tests.execution import handlers
from tests.factories import job_in_state

DOWN_BROKER = "redis://127.0.0.1:6393/0"  # nothing listens there
TEST_TYPES = {
    "times-out": {"handler": "tests.execution.handlers.times_out"},
    "times-out-in-a-step": {"handler": "tests.execution.handlers.times_out_in_a_step"},
    "fails-in-a-step": {"handler": "tests.execution.handlers.fails_in_a_step"},
    "notes": {"handler": "tests.execution.handlers.notes"},
    "quiet": {"handler": "tests.execution.handlers.quiet"},
    "unstorable": {"handler": "tests.execution.handlers.unstorable"},
}


@pytest.fixture(autouse=True)
def test_types(settings):
    settings.RUNNER_JOB_TYPES = TEST_TYPES


def ring(delay: float = 0.5) -> None:
    """One doorbell, answered as a worker would."""
    job_execute(worker="test-worker", task_id="t1", retry_delay=lambda attempt: delay)


def run(job: RunnerJob, delay: float = 0.5) -> RunnerJob:
    """Ring once; ``job``, reloaded (the bell runs the best runnable job, here the only one)."""
    ring(delay)
    job.refresh_from_db()
    return job


def types_of(job: RunnerJob) -> list[str]:
    return list(JobEvent.objects.filter(job=job).values_list("type", flat=True))


@pytest.mark.django_db
class TestOutcomes:
    def test_a_result_that_cannot_be_stored_fails_the_job_saying_so(self):
        job = run(job_in_state("queued", type="unstorable"))
        assert (job.status, job.result) == ("failed", None)
        assert job.error.startswith("Result not stored: ")
        assert job.version == JobEvent.objects.filter(job=job).count()

    def test_echo_completes(self):
        job = run(job_in_state("queued", type="echo", payload={"a": [1]}))
        assert (job.status, job.result, job.attempts, job.lease_token) == (
            "completed",
            {"a": [1]},
            1,
            None,
        )
        started = JobEvent.objects.get(job=job, type="job.started")
        assert started.payload == {"attempt": 1, "worker": "test-worker"}
        assert started.actor == "worker"

    def test_sleep_runs_its_steps_and_reports_progress(self):
        job = run(job_in_state("queued", type="sleep", payload={"seconds": 0.2, "steps": 2}))
        assert (job.status, job.result, job.progress) == (
            "completed",
            {"slept": 0.2, "steps": 2},
            100,
        )
        assert list(job.steps.values_list("status", flat=True)) == ["completed", "completed"]

    def test_flaky_without_failures_completes_at_once(self):
        job = run(job_in_state("queued", type="flaky", payload={"failures": 0}))
        assert (job.status, job.result) == ("completed", {"attempts": 1, "failures": 0})

    def test_fail_fails_with_the_message_verbatim(self):
        job = run(job_in_state("queued", type="fail", payload={"message": "no"}))
        assert (job.status, job.error, job.attempts) == ("failed", "no", 1)

    def test_a_transient_error_queues_the_job_again_and_propagates_with_its_delay(self):
        job = job_in_state("queued", type="flaky", payload={"failures": 1})
        with pytest.raises(TransientJobError) as raised:
            run(job, delay=7.5)
        assert raised.value.retry_delay == 7.5
        job.refresh_from_db()
        assert (job.status, job.attempts, job.error) == ("queued", 1, "Transient failure 1 of 1.")
        event = JobEvent.objects.get(job=job, type="job.retry_scheduled")
        assert event.payload == {"attempt": 1, "delay": 7.5, "error": "Transient failure 1 of 1."}
        assert job.due_at > timezone.now() + timedelta(seconds=6)

    def test_a_transient_error_on_the_last_attempt_fails_without_propagating(self):
        job = run(job_in_state("queued", type="flaky", payload={"failures": 3}, max_attempts=1))
        assert (job.status, job.error) == ("failed", "Transient failure 1 of 3.")
        assert "job.retry_scheduled" not in types_of(job)

    def test_any_other_exception_fails_the_job_with_its_type_and_message(self):
        job = run(job_in_state("queued", type="sleep", payload={"seconds": "soon"}))
        assert job.status == "failed"
        assert job.error == "ValueError: could not convert string to float: 'soon'"

    def test_a_step_that_raises_fails_with_the_job(self):
        job = run(job_in_state("queued", type="fails-in-a-step"))
        assert (job.status, job.error) == ("failed", "ValueError: broken input")
        step = job.steps.get()
        assert (step.name, step.phase, step.status, step.output) == (
            "prepare",
            "setup",
            "failed",
            "ValueError: broken input",
        )

    def test_custom_events_and_progress_are_recorded(self):
        job = run(job_in_state("queued", type="notes"))
        assert (job.status, job.result) == ("completed", "noted")
        assert JobEvent.objects.get(job=job, type="note.added").payload == {"n": 1}
        assert JobEvent.objects.get(job=job, type="job.progress").payload == {
            "progress": 40,
            "message": "noted",
        }

    def test_a_type_no_longer_registered_fails_saying_so(self, settings):
        job = job_in_state("queued", type="notes")
        settings.RUNNER_JOB_TYPES = {}
        job = run(job)
        assert (job.status, job.error) == (
            "failed",
            "No handler for job type 'notes' in this worker.",
        )


@pytest.mark.django_db
class TestMessagesThatDoNothing:
    @pytest.mark.parametrize("status", ["pending", "running", "completed", "failed", "cancelled"])
    def test_a_job_that_is_not_queued_is_left_alone(self, status):
        job = job_in_state(status)
        before = (job.status, job.version, job.attempts)
        job = run(job)
        assert (job.status, job.version, job.attempts) == before

    def test_a_bell_with_nothing_queued(self):
        ring()
        assert not RunnerJob.objects.exists()

    def test_a_coordinator_job(self):
        job = job_in_state("queued", type="agent-task")
        assert run(job).version == job.version

    def test_a_job_still_waiting_out_its_retry_delay(self):
        job = job_in_state("queued", type="flaky", payload={"failures": 1})
        with pytest.raises(TransientJobError):
            run(job, delay=60)
        job.refresh_from_db()
        assert run(job).version == job.version


@pytest.mark.django_db(transaction=True)
class TestWhileRunning:
    def run_in_thread(self, job: RunnerJob) -> threading.Thread:
        def target() -> None:
            try:
                run(job)
            finally:
                connection.close()

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    def wait_running(self, job: RunnerJob) -> None:
        deadline = time.monotonic() + 5
        while not RunnerJob.objects.filter(pk=job.pk, status="running").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def test_a_bell_skips_a_job_a_writer_holds_and_never_starts_it_after_its_cancel(self):
        """The claim locks with SKIP LOCKED: while a cancel holds the job's row lock the bell
        passes it by at once (no wait), so the job is never started after its cancel."""
        job = job_in_state("queued")
        locked, rung = threading.Event(), threading.Event()

        def cancelling() -> None:
            with transaction.atomic():
                job_lock(job.pk)
                locked.set()
                rung.wait(5)
                services.job_cancel(job_id=job.pk, actor="u")
            connection.close()

        canceller = threading.Thread(target=cancelling)
        canceller.start()
        locked.wait(5)
        try:
            started = time.monotonic()
            during = run(job)
            waited = time.monotonic() - started
        finally:
            rung.set()
            canceller.join()
        assert (during.status, during.attempts) == ("queued", 0) and waited < 2
        after = run(job)
        assert (after.status, after.attempts) == ("cancelled", 0)
        assert not JobEvent.objects.filter(job=job, type="job.started").exists()

    @pytest.mark.parametrize("job_type", ["times-out", "times-out-in-a-step"])
    def test_a_soft_time_limit_fails_the_job_saying_so(self, settings, job_type):
        """Reported on a fresh connection (the limit may have cut a query short)."""
        job = run(job_in_state("queued", type=job_type))
        seconds = settings.CELERY_TASK_SOFT_TIME_LIMIT
        assert (job.status, job.error) == (
            "failed",
            f"Time limit exceeded: the attempt ran longer than {seconds} s.",
        )
        assert set(job.steps.values_list("status", flat=True)) <= {"failed"}

    def test_cancel_stops_the_handler_at_its_next_check(self):
        job = job_in_state("queued", type="sleep", payload={"seconds": 20, "steps": 2})
        thread = self.run_in_thread(job)
        self.wait_running(job)
        services.job_cancel(job_id=job.pk, actor="user:alice")
        thread.join(timeout=2)
        assert not thread.is_alive()
        job.refresh_from_db()
        assert job.status == "cancelled"
        assert types_of(job)[-1] == "job.cancelled"
        assert "job.completed" not in types_of(job)

    def test_the_heartbeat_keeps_a_quiet_handler_s_lease(self, settings):
        settings.RUNNER_JOB_LEASE_SECONDS = 0.3
        job = job_in_state("queued", type="quiet", payload={"seconds": 1})
        started = timezone.now()
        job = run(job)
        assert job.status == "completed"
        # Without the heartbeat the lease would have ended 0.3 s after the start.
        assert handlers.observed["lease_expires_at"] > started + timedelta(seconds=0.8)
        assert handlers.observed["cancelled"] is False

    def test_a_refused_heartbeat_tells_the_handler_it_lost_the_job(self, settings):
        settings.RUNNER_JOB_LEASE_SECONDS = 0.3
        job = job_in_state("queued", type="quiet", payload={"seconds": 0.6})
        thread = self.run_in_thread(job)
        self.wait_running(job)
        services.job_cancel(job_id=job.pk, actor="user:alice")
        thread.join(timeout=5)
        assert handlers.observed["cancelled"] is True
        job.refresh_from_db()
        assert job.status == "cancelled"

    def test_a_stale_attempt_is_fenced_after_recovery(self, settings):
        """The lost attempt comes back after the job was recovered and run again: none of its
        reports lands, and the job is completed once."""
        settings.RUNNER_JOB_LEASE_SECONDS = 0
        stale = services.job_start(job_id=job_in_state("queued").pk, actor="worker", worker="old")
        context = execution.JobContext(stale)
        services.jobs_sweep()
        settings.RUNNER_JOB_LEASE_SECONDS = 60
        job = run(stale)
        assert (job.status, job.attempts) == ("completed", 2)
        with pytest.raises(execution.JobStoppedError):
            context.progress(50)
        assert execution._report_outcome(context, services.job_complete, result={}) is None
        assert types_of(job).count("job.completed") == 1


@pytest.mark.django_db
def test_cancelled_is_asked_at_most_every_quarter_second():
    job = job_in_state("running")
    context = execution.JobContext(job)
    assert context.cancelled is False
    services.job_cancel(job_id=job.pk, actor="u")
    assert context.cancelled is False  # checked a moment ago: not asked again yet
    time.sleep(execution.CANCEL_CHECK_INTERVAL_SECONDS)
    assert context.cancelled is True
    with pytest.raises(execution.JobStoppedError):
        context.sleep(1)


def test_backoff_doubles_up_to_its_cap_and_jitter_keeps_it_growing():
    exact = [backoff_delay(attempt=a, base=2, maximum=10, jitter=False) for a in (1, 2, 3, 4)]
    assert exact == [2, 4, 8, 10]
    for attempt in (1, 2, 3):
        ceiling = min(10, 2 * 2 ** (attempt - 1))
        for _ in range(50):
            assert ceiling / 2 <= backoff_delay(attempt=attempt, base=2, maximum=10, jitter=True)
            assert backoff_delay(attempt=attempt, base=2, maximum=10, jitter=True) <= ceiling


@pytest.mark.django_db
class TestTasks:
    def test_the_retry_countdown_is_the_recorded_delay(self):
        """Run eagerly (Celery then runs a retry at once, ignoring its countdown): the retry
        finds the job waiting out its delay and leaves it."""
        job = job_in_state("queued", type="flaky", payload={"failures": 1})
        execute_job_task.apply(args=[str(job.pk)])
        job.refresh_from_db()
        assert (job.status, job.attempts) == ("queued", 1)
        delay = JobEvent.objects.get(job=job, type="job.retry_scheduled").payload["delay"]
        assert 1 <= delay <= 2  # RUNNER_RETRY_BACKOFF_SECONDS=2, first attempt, jittered

    def test_a_hard_time_limit_fails_the_job_its_task_ran(self, settings):
        """The main process knows only the task id: the job is the running one whose lease
        that task's attempt holds, not another running job."""
        job = job_in_state("running")
        other = job_in_state("running")
        RunnerJob.objects.filter(pk=job.pk).update(lease_task_id="task-id")
        RunnerJob.objects.filter(pk=other.pk).update(lease_task_id="other-task")
        execute_job_task.on_failure(TimeLimitExceeded(630), "task-id", [], {}, None)
        job.refresh_from_db()
        seconds = settings.CELERY_TASK_TIME_LIMIT
        assert (job.status, job.error) == (
            "failed",
            f"Time limit exceeded: the attempt ran longer than {seconds} s.",
        )
        execute_job_task.on_failure(TimeLimitExceeded(630), "task-id", [], {}, None)
        execute_job_task.on_failure(ValueError("x"), "task-id", [], {}, None)
        job.refresh_from_db()
        other.refresh_from_db()
        assert job.version == 4 and other.status == "running"

    def test_the_sweep_task_reports_what_it_did(self):
        assert sweep_task() == {
            "dispatched": 0,
            "redispatched": 0,
            "requeued": 0,
            "failed": 0,
            "expired": 0,
            "timed_out": 0,
            "broker_down": False,
            "skipped": False,
        }
