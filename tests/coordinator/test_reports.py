"""The status-report services: each target status maps onto the service that owns the move,
under the row lock, after the lease and the state machine are checked."""

import uuid

import pytest

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from tests.factories import job_in_state

pytestmark = pytest.mark.django_db

ACTOR = "coordinator:agents"


def report(job: RunnerJob, status: str, **kwargs) -> RunnerJob:
    return services.job_status_report(
        job_id=job.pk, status=status, actor=ACTOR, worker="w2", **kwargs
    )


def last_event(job: RunnerJob) -> JobEvent:
    return JobEvent.objects.filter(job=job).latest("id")


def assert_unchanged(job: RunnerJob) -> None:
    version = job.version
    job.refresh_from_db()
    assert job.version == version == JobEvent.objects.filter(job=job).count()


def test_running_starts_a_new_attempt_for_the_worker():
    job = report(job_in_state("queued"), "running")
    assert (job.status, job.attempts, job.lease_owner) == ("running", 1, "w2")
    assert job.lease_token is not None
    event = last_event(job)
    assert (event.type, event.actor, event.payload) == (
        "job.started",
        ACTOR,
        {"attempt": 1, "worker": "w2"},
    )


def test_queued_from_pending_queues():
    job = report(job_in_state("pending"), "queued")
    assert job.status == "queued"
    assert last_event(job).type == "job.queued"


def test_queued_from_running_releases_the_job():
    running = job_in_state("running")
    job = report(running, "queued", lease_token=running.lease_token)
    assert (job.status, job.lease_token, job.attempts) == ("queued", None, 1)
    event = last_event(job)
    assert (event.type, event.payload) == ("job.queued", {"reason": "released", "attempt": 1})
    assert job.version == 4


def test_completed_failed_cancelled():
    job = report(job_in_state("running"), "completed")
    assert (job.status, job.result, job.progress) == ("completed", None, 100)
    job = report(job_in_state("running"), "failed", error="agent crashed")
    assert (job.status, job.error) == ("failed", "agent crashed")
    job = report(job_in_state("running"), "failed")
    assert job.error == services.reports.REPORTED_FAILURE_ERROR
    job = report(job_in_state("queued"), "cancelled")
    assert job.status == "cancelled"
    assert last_event(job).actor == ACTOR


def test_unknown_status_is_input_error():
    job = job_in_state("running")
    with pytest.raises(services.JobInputError) as exc:
        report(job, "done")
    assert "status" in exc.value.errors
    assert_unchanged(job)


@pytest.mark.parametrize(
    "current, target",
    [
        ("pending", "running"),
        ("queued", "completed"),
        ("running", "pending"),
        ("running", "running"),
        ("completed", "queued"),
        ("cancelled", "cancelled"),
    ],
)
def test_forbidden_move_changes_nothing(current, target):
    job = job_in_state(current)
    with pytest.raises(services.InvalidTransitionError):
        report(job, target)
    assert_unchanged(job)


def test_stale_lease_is_refused_before_the_state_machine():
    job = job_in_state("running")
    with pytest.raises(services.StaleLeaseError):
        report(job, "completed", lease_token=uuid.uuid4())
    assert_unchanged(job)


def test_unknown_job():
    with pytest.raises(services.JobNotFoundError):
        services.job_status_report(job_id=uuid.uuid4(), status="running", actor="a", worker="w")


def test_release_refusals():
    running = job_in_state("running")
    with pytest.raises(services.StaleLeaseError):
        services.job_release(job_id=running.pk, actor=ACTOR, lease_token=uuid.uuid4())
    assert_unchanged(running)
    queued = job_in_state("queued")
    with pytest.raises(services.InvalidTransitionError):
        services.job_release(job_id=queued.pk, actor=ACTOR)
    assert_unchanged(queued)
