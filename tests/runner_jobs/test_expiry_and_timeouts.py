"""Flow control (SPEC §8): a job not started by its ``expires_at`` ends ``expired`` and is never
started after it; an attempt past its time limit is failed by the sweeper (a claimed external
job, or a Celery handler that outlived its own interruption). Real PostgreSQL."""

from datetime import timedelta

import pytest
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.registry import JobType, attempt_timeout, job_type_get
from runner_jobs.services.jobs import attempt_deadline
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db


def past(job: RunnerJob, **fields: timedelta) -> RunnerJob:
    """Move a job's timestamps into the past (test setup, not a product write)."""
    RunnerJob.objects.filter(pk=job.pk).update(
        **{name: timezone.now() - delta for name, delta in fields.items()}
    )
    job.refresh_from_db()
    return job


def worker_claim() -> RunnerJob | None:
    return services.job_claim_next(
        actor="worker", worker="w", task_id="t", exclude_types=["agent-task"], tolerance=0
    )


def coordinator_claim() -> list[RunnerJob]:
    return services.job_claim(types=["agent-task"], worker="c", limit=5, actor="coordinator")


class TestExpiry:
    def test_the_sweep_ends_a_job_not_started_by_its_expiry_with_its_event(self):
        job = past(job_in_state("queued", ttl_seconds=5), expires_at=timedelta(seconds=1))
        report = services.jobs_sweep()
        assert report.expired == 1
        job.refresh_from_db()
        assert (job.status, job.version) == ("expired", 3)
        assert job.completed_at is not None and job.is_terminal
        event = JobEvent.objects.get(job=job, type="job.expired")
        assert event.actor == "system"
        assert event.payload == {"from": "queued", "expires_at": job.expires_at.isoformat()}
        assert JobEvent.objects.filter(job=job).count() == job.version
        assert services.jobs_sweep().expired == 0

    def test_a_job_whose_expiry_has_not_come_is_left_alone(self):
        job = job_in_state("queued", ttl_seconds=60)
        assert services.jobs_sweep().expired == 0
        with pytest.raises(services.InvalidTransitionError):
            services.job_expire(job_id=job.pk)
        assert RunnerJob.objects.get(pk=job.pk).status == "queued"

    def test_a_job_without_a_ttl_never_expires(self):
        job = job_in_state("queued")
        with pytest.raises(services.InvalidTransitionError):
            services.job_expire(job_id=job.pk)

    def test_a_started_job_does_not_expire(self):
        job = past(job_in_state("running", ttl_seconds=5), expires_at=timedelta(seconds=1))
        with pytest.raises(services.InvalidTransitionError):
            services.job_expire(job_id=job.pk)
        assert services.jobs_sweep().expired == 0
        assert RunnerJob.objects.get(pk=job.pk).status == "running"

    @pytest.mark.parametrize("job_type", ["echo", "agent-task"])
    def test_an_expired_job_is_never_started_even_before_the_sweep(self, job_type):
        job = job_in_state("queued", type=job_type, ttl_seconds=5)
        past(job, expires_at=timedelta(milliseconds=1))
        assert worker_claim() is None
        assert coordinator_claim() == []
        assert RunnerJob.objects.get(pk=job.pk).status == "queued"

    def test_an_expired_job_is_retried_like_a_failed_one_with_a_new_expiry(self):
        job = past(job_in_state("queued", ttl_seconds=5), expires_at=timedelta(seconds=1))
        services.jobs_sweep()
        retry = services.job_retry(job_id=job.pk, actor="system")
        assert (retry.status, retry.ttl_seconds, retry.retry_of_id) == ("queued", 5, job.pk)
        assert retry.expires_at is not None and retry.expires_at > timezone.now()

    def test_an_expired_job_cannot_be_cancelled(self):
        job = past(job_in_state("queued", ttl_seconds=5), expires_at=timedelta(seconds=1))
        services.jobs_sweep()
        with pytest.raises(services.InvalidTransitionError):
            services.job_cancel(job_id=job.pk, actor="system")


class TestTimeouts:
    def test_a_claimed_external_job_past_its_timeout_is_failed_by_the_sweep(self):
        job_in_state("queued", type="agent-task", timeout_seconds=5)
        (claimed,) = coordinator_claim()
        past(claimed, started_at=timedelta(seconds=6))
        report = services.jobs_sweep()
        assert report.timed_out == 1
        claimed.refresh_from_db()
        assert claimed.status == "failed"
        assert claimed.error == "Time limit exceeded: the attempt ran longer than 5 s."
        assert JobEvent.objects.filter(job=claimed, type="job.failed").count() == 1

    def test_a_job_within_its_time_limit_is_left_alone(self):
        job_in_state("queued", type="agent-task", timeout_seconds=60)
        (claimed,) = coordinator_claim()
        past(claimed, started_at=timedelta(seconds=30))
        assert services.jobs_sweep().timed_out == 0
        with pytest.raises(services.InvalidTransitionError):
            services.job_time_out(job_id=claimed.pk)
        assert RunnerJob.objects.get(pk=claimed.pk).status == "running"

    def test_an_external_type_without_a_limit_runs_as_long_as_its_lease_is_renewed(self):
        job_in_state("queued", type="agent-task")
        (claimed,) = coordinator_claim()
        past(claimed, started_at=timedelta(days=3))
        assert services.jobs_sweep().timed_out == 0

    def test_an_external_types_own_limit_applies(self, settings):
        settings.RUNNER_JOB_TYPES = {"crawl": {"external": True, "timeout_seconds": 20}}
        job_in_state("queued", type="crawl")
        (claimed,) = services.job_claim(types=["crawl"], worker="c", limit=1, actor="c")
        past(claimed, started_at=timedelta(seconds=21))
        assert services.jobs_sweep().timed_out == 1
        claimed.refresh_from_db()
        assert claimed.error == "Time limit exceeded: the attempt ran longer than 20 s."

    def test_a_celery_job_is_failed_by_the_sweep_only_a_grace_period_after_its_limit(
        self, settings
    ):
        grace = settings.RUNNER_JOB_HARD_TIME_LIMIT_GRACE_SECONDS
        job = job_in_state("running", timeout_seconds=5)
        past(job, started_at=timedelta(seconds=6))
        assert services.jobs_sweep().timed_out == 0
        past(job, started_at=timedelta(seconds=6 + grace))
        assert services.jobs_sweep().timed_out == 1
        assert RunnerJob.objects.get(pk=job.pk).status == "failed"

    def test_a_job_that_is_not_running_cannot_time_out(self):
        job = job_in_state("queued", timeout_seconds=5)
        with pytest.raises(services.InvalidTransitionError):
            services.job_time_out(job_id=job.pk)

    def test_a_job_never_started_has_no_deadline(self):
        assert attempt_deadline(RunnerJob(type="echo", timeout_seconds=5)) is None


class TestAttemptTimeout:
    def test_the_jobs_own_limit_first(self):
        assert attempt_timeout(job_type_get("echo"), 7) == 7

    def test_then_its_types(self):
        assert attempt_timeout(JobType("t", "h", timeout_seconds=9), None) == 9

    def test_then_the_default_for_a_celery_type_or_an_unknown_one(self, settings):
        assert attempt_timeout(job_type_get("echo"), None) == settings.RUNNER_JOB_TIME_LIMIT_SECONDS
        assert attempt_timeout(None, None) == settings.RUNNER_JOB_TIME_LIMIT_SECONDS

    def test_an_external_type_without_one_has_none(self):
        assert attempt_timeout(job_type_get("agent-task"), None) is None


def test_workspaces_do_not_matter_for_expiry():
    jobs = [
        past(job_in_state("queued", workspace=WorkspaceFactory(), ttl_seconds=5), expires_at=d)
        for d in (timedelta(seconds=1), timedelta(seconds=2))
    ]
    assert services.jobs_sweep().expired == len(jobs)
