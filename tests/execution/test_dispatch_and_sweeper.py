"""Dispatch and the sweeper against the real database and the real Redis (this run's
``REDIS_URL``), and a broker that is really down (a port nobody listens on)."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.services import sweeper
from runner_jobs.services.bell import _ring_quietly, bell_ring, broker_priority
from runner_jobs.services.dispatch import (
    RUN_AT_BELL_MAX_SECONDS,
    job_dispatch_on_commit,
    job_publish,
)
from runner_jobs.services.jobs import WORKER_LOST_ERROR
from tests.execution.conftest import broker_url
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

DOWN_BROKER = "redis://127.0.0.1:6393/0"  # nothing listens there


@pytest.fixture(autouse=True)
def empty_queue():
    celery_app.control.purge()
    yield
    celery_app.control.purge()


def queued_messages() -> dict[int, list[str]]:
    """The job ids in the broker's queue, by kombu priority."""
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        found: dict[int, list[str]] = {}
        for priority in range(10):
            raw = channel.client.lrange(channel._q_for_pri("celery", priority), 0, -1)
            ids = [json.loads(m)["headers"]["argsrepr"] for m in raw]
            if ids:
                found[priority] = ids
        return found


def message(job: RunnerJob) -> str:
    return repr([str(job.pk)])


def age(job: RunnerJob, **fields: timedelta) -> None:
    """Move a job's timestamps into the past (test setup, not a product write)."""
    RunnerJob.objects.filter(pk=job.pk).update(
        **{name: timezone.now() - delta for name, delta in fields.items()}
    )


def snapshot(job: RunnerJob) -> tuple:
    job.refresh_from_db()
    return job.status, job.version, job.due_at, JobEvent.objects.filter(job=job).count()


class TestDispatch:
    def test_pending_becomes_queued_once_the_broker_has_the_message(self):
        job = job_in_state("pending", priority=7)
        job = services.job_dispatch(job_id=job.pk)
        assert (job.status, job.version) == ("queued", 2)
        assert JobEvent.objects.filter(job=job).last().type == "job.queued"
        # Priority 7 (higher first) is kombu's 2 (lower first).
        assert queued_messages() == {2: [message(job)]}

    @pytest.mark.parametrize(("ours", "kombus"), [(9, 0), (5, 4), (0, 9)])
    def test_priority_mapping(self, ours, kombus):
        assert broker_priority(ours) == kombus

    @pytest.mark.parametrize("status", ["queued", "running", "completed", "cancelled"])
    def test_a_job_that_is_not_pending_is_refused_and_nothing_is_sent(self, status):
        job = job_in_state(status)
        before = snapshot(job)
        with pytest.raises(services.InvalidTransitionError):
            services.job_dispatch(job_id=job.pk)
        assert snapshot(job) == before
        assert queued_messages() == {}

    def test_broker_down_leaves_the_job_pending_and_unchanged(self):
        job = job_in_state("pending")
        before = snapshot(job)
        with broker_url(DOWN_BROKER), pytest.raises(services.BrokerUnavailableError):
            services.job_dispatch(job_id=job.pk)
        assert snapshot(job) == before

    def test_the_after_commit_hook_never_raises(self):
        pending, queued = job_in_state("pending"), job_in_state("queued")
        with broker_url(DOWN_BROKER):
            job_dispatch_on_commit(job_id=pending.pk)
        job_dispatch_on_commit(job_id=queued.pk)
        assert snapshot(pending)[0] == "pending"
        assert queued_messages() == {}

    def test_create_dispatches_after_commit_only_a_celery_run_type(
        self, django_capture_on_commit_callbacks
    ):
        workspace = WorkspaceFactory()
        with django_capture_on_commit_callbacks(execute=True):
            echo = services.job_create(
                workspace=workspace, spec=services.JobSpec(type="echo", payload={}), actor="u"
            )
            external = services.job_create(
                workspace=workspace, spec=services.JobSpec(type="agent-task", payload={}), actor="u"
            )
            # Inserted queued; nothing is sent before the commit.
            assert queued_messages() == {}
            assert snapshot(echo.job)[0] == "queued"
        assert snapshot(echo.job)[0] == "queued"
        assert snapshot(external.job)[0] == "queued"
        assert queued_messages() == {4: [message(echo.job)]}

    def test_a_create_whose_message_is_refused_is_sent_by_the_next_sweep(
        self, settings, django_capture_on_commit_callbacks
    ):
        """The create still succeeds (queued, version 2); its due time moves back by the
        redispatch period, so the next sweep sends it once the broker takes messages again."""
        with broker_url(DOWN_BROKER), django_capture_on_commit_callbacks(execute=True):
            job = services.job_create(
                workspace=WorkspaceFactory(),
                spec=services.JobSpec(type="echo", payload={}),
                actor="u",
            ).job
        job.refresh_from_db()
        assert (job.status, job.version) == ("queued", 2)
        assert job.due_at <= timezone.now() - timedelta(
            seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS - 1
        )
        assert queued_messages() == {}
        report = services.jobs_sweep()
        assert report.redispatched == 1
        assert queued_messages() == {4: [message(job)]}

    def test_a_retry_is_dispatched_after_commit_too(self, django_capture_on_commit_callbacks):
        failed = job_in_state("failed")
        with django_capture_on_commit_callbacks(execute=True):
            retry = services.job_retry(job_id=failed.pk, actor="u")
        assert snapshot(retry)[0] == "queued"


class TestRedispatch:
    def test_an_overdue_queued_job_is_sent_again_and_due_from_now(self, settings):
        job = job_in_state("queued")
        age(job, due_at=timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS + 5))
        job = services.job_redispatch(job_id=job.pk)
        assert job.status == "queued"
        assert timezone.now() - job.due_at < timedelta(seconds=5)
        event = JobEvent.objects.filter(job=job).last()
        assert event.type == "job.redispatched"
        assert event.payload["overdue_seconds"] >= 5
        assert queued_messages() == {4: [message(job)]}

    def test_a_job_not_yet_overdue_is_refused(self):
        job = job_in_state("queued")
        before = snapshot(job)
        with pytest.raises(services.InvalidTransitionError):
            services.job_redispatch(job_id=job.pk)
        assert snapshot(job) == before
        assert queued_messages() == {}

    def test_a_job_that_is_not_queued_is_refused(self):
        job = job_in_state("running")
        with pytest.raises(services.InvalidTransitionError):
            services.job_redispatch(job_id=job.pk)

    def test_broker_down_changes_nothing(self, settings):
        job = job_in_state("queued")
        age(job, due_at=timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS + 5))
        before = snapshot(job)
        with broker_url(DOWN_BROKER), pytest.raises(services.BrokerUnavailableError):
            services.job_redispatch(job_id=job.pk)
        assert snapshot(job) == before


class TestSweep:
    def test_pending_jobs_past_the_grace_period_are_dispatched(self):
        young, old = job_in_state("pending"), job_in_state("pending")
        age(old, created_at=timedelta(seconds=sweeper.PENDING_GRACE_SECONDS + 1))
        report = services.jobs_sweep()
        assert (report.dispatched, report.broker_down, report.skipped) == (1, False, False)
        assert snapshot(old)[0] == "queued"
        assert snapshot(young)[0] == "pending"

    def test_it_works_in_batches(self, monkeypatch):
        monkeypatch.setattr(sweeper, "SWEEP_BATCH_SIZE", 2)
        jobs = [job_in_state("pending") for _ in range(5)]
        for job in jobs:
            age(job, created_at=timedelta(minutes=1))
        assert services.jobs_sweep().dispatched == 5
        assert {snapshot(job)[0] for job in jobs} == {"queued"}
        assert sum(len(ids) for ids in queued_messages().values()) == 5

    def test_a_job_that_changed_since_it_was_selected_is_skipped(self):
        pending, queued = job_in_state("pending"), job_in_state("queued")
        ids = RunnerJob.objects.filter(pk__in=[pending.pk, queued.pk])
        assert sweeper._each(ids, services.job_dispatch) == 1

    def test_an_overdue_job_started_since_it_was_selected_gets_a_bell_rung_in_its_stead(
        self, settings
    ):
        """The sweep selected two overdue jobs; the bell of the first started the second (a bell
        starts the best runnable job). The second is refused, and a bell is rung for it anyway:
        the first job, still queued, is left without a bell otherwise."""
        overdue = timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS + 1)
        first, second = job_in_state("queued"), job_in_state("queued")
        age(first, due_at=overdue)
        age(second, due_at=overdue)

        def redispatch_then_start_the_other(*, job_id):
            job = services.job_redispatch(job_id=job_id)
            other = second if job.pk == first.pk else first  # the sweep goes in id order
            services.job_start(job_id=other.pk, actor="worker", worker="w")
            return job

        ids = RunnerJob.objects.filter(pk__in=[first.pk, second.pk])
        assert sweeper._each(ids, redispatch_then_start_the_other, refused=bell_ring) == 1
        bells = [m for ms in queued_messages().values() for m in ms]
        swept_first = min(first, second, key=lambda job: job.pk)
        assert sorted(bells) == sorted(["()", message(swept_first)])

    def test_overdue_queued_jobs_of_celery_types_only_are_redispatched(self, settings):
        overdue = timedelta(seconds=settings.RUNNER_REDISPATCH_AFTER_SECONDS + 1)
        echo, external, fresh = (
            job_in_state("queued"),
            job_in_state("queued", type="agent-task"),
            job_in_state("queued"),
        )
        age(echo, due_at=overdue)
        age(external, due_at=overdue)
        before = snapshot(external), snapshot(fresh)
        assert services.jobs_sweep().redispatched == 1
        assert JobEvent.objects.filter(job=echo).last().type == "job.redispatched"
        assert (snapshot(external), snapshot(fresh)) == before

    def test_running_jobs_past_their_lease_are_requeued_and_sent_or_failed(self):
        requeued = job_in_state("running")
        last_attempt = job_in_state("running", max_attempts=1)
        external = job_in_state("running", type="agent-task")
        alive = job_in_state("running")
        for job in (requeued, last_attempt, external):
            age(job, lease_expires_at=timedelta(seconds=1))
        before = snapshot(alive)
        report = services.jobs_sweep()
        assert (report.requeued, report.failed) == (2, 1)
        requeued.refresh_from_db()
        assert (requeued.status, requeued.lease_token) == ("queued", None)
        assert JobEvent.objects.filter(job=requeued).last().payload == {
            "reason": "lease_expired",
            "attempt": 1,
        }
        last_attempt.refresh_from_db()
        assert (last_attempt.status, last_attempt.error) == (
            "failed",
            WORKER_LOST_ERROR,
        )
        assert snapshot(external)[0] == "queued"
        assert snapshot(alive) == before
        # Only the Celery-run job is sent; a coordinator claims the external one.
        assert queued_messages() == {4: [message(requeued)]}

    def test_a_lease_renewed_since_it_was_selected_is_left_alone(self):
        job = job_in_state("running")
        report = services.SweepReport()
        sweeper._recover_lost(report, timezone.now() + timedelta(days=1))
        assert (report.requeued, report.failed) == (0, 0)
        assert snapshot(job)[0] == "running"

    def test_broker_down_sends_nothing_but_still_recovers(self):
        pending, running, second = (
            job_in_state("pending"),
            job_in_state("running"),
            job_in_state("running"),
        )
        age(pending, created_at=timedelta(minutes=1))
        age(running, lease_expires_at=timedelta(seconds=1))
        age(second, lease_expires_at=timedelta(seconds=1))
        with broker_url(DOWN_BROKER):
            report = services.jobs_sweep()
        assert (report.dispatched, report.requeued, report.broker_down) == (0, 2, True)
        assert snapshot(pending)[0] == "pending"
        assert {snapshot(running)[0], snapshot(second)[0]} == {"queued"}

    def test_a_broker_that_fails_during_recovery_stops_the_sending(self, settings):
        running = job_in_state("running")
        age(running, lease_expires_at=timedelta(seconds=1))
        report = services.SweepReport()
        with broker_url(DOWN_BROKER):
            sweeper._recover_lost(report, timezone.now())
        assert (report.requeued, report.broker_down) == (1, True)

    def test_a_sweep_in_progress_makes_another_skip(self):
        held, release = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            with sweeper._single_sweep() as acquired:
                assert acquired
                held.set()
                release.wait(5)
            connection.close()

        thread = threading.Thread(target=hold_the_lock)
        thread.start()
        held.wait(5)
        try:
            assert services.jobs_sweep() == services.SweepReport(skipped=True)
        finally:
            release.set()
            thread.join()
        assert services.jobs_sweep().skipped is False


class TestBells:
    def test_a_job_due_more_than_an_hour_ahead_is_left_to_the_sweeper(self):
        """No message is sent for a far ``run_at`` (a countdown that long outlives Redis'
        visibility timeout); the sweeper rings once the job is overdue."""
        job = job_in_state("queued")
        job.due_at = timezone.now() + timedelta(seconds=RUN_AT_BELL_MAX_SECONDS + 60)
        job_publish(job)
        assert queued_messages() == {}

    def test_a_freed_slot_with_the_broker_down_is_logged_not_raised(self, caplog):
        with broker_url(DOWN_BROKER):
            _ring_quietly()
        assert "bell not rung" in caplog.text
        assert queued_messages() == {}
