"""The status-report services: each target status maps onto the service that owns the move,
under the row lock, after the lease and the state machine are checked."""

import uuid
from datetime import timedelta
from functools import partial

import pytest
from django.utils import timezone

from runner_jobs import services
from runner_jobs.errors import NotRunnableError
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.services.policies import job_type_policy_update
from tests.factories import WorkspaceFactory, job_in_state
from tests.runner_jobs.test_concurrency import race

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


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"run_at": "future"}, "not_due"),
        ({"ttl_seconds": 1, "expired": True}, "expired"),
        ({"concurrency_key": "k", "held": True}, "concurrency_limit"),
        ({"paused": True}, "type_paused"),
        ({"max_running": 1, "held": True}, "type_max_running"),
    ],
)
def test_running_obeys_the_dispatchers_rule_and_writes_nothing_when_held_back(spec, reason):
    """A start by report is a start: the rule a claim obeys (SPEC §8) holds it back, with the
    reason, and nothing is written."""
    workspace = WorkspaceFactory()
    fields = {k: v for k, v in spec.items() if k in ("ttl_seconds", "concurrency_key")}
    if spec.get("run_at"):
        fields["run_at"] = timezone.now() + timedelta(hours=1)
    if "paused" in spec or "max_running" in spec:
        policy = {k: spec[k] for k in ("paused", "max_running") if k in spec}
        job_type_policy_update(workspace=workspace, type="echo", actor="u", **policy)
    if spec.get("held"):
        job_in_state("running", workspace=workspace, **fields)
    job = job_in_state("queued", workspace=workspace, **fields)
    if spec.get("expired"):
        RunnerJob.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(NotRunnableError) as caught:
        report(job, "running")
    assert caught.value.reasons == [reason]
    assert_unchanged(job)
    assert job.status == "queued"


@pytest.mark.django_db(transaction=True)
def test_racing_starts_by_report_for_a_keys_last_slot_have_one_winner():
    """Ten queued jobs of one key (limit 1), each started by its own report at once: the key's
    advisory lock orders the counts, so exactly one starts and nine are ``not_runnable``."""
    workspace = WorkspaceFactory()
    jobs = [
        job_in_state("queued", workspace=workspace, concurrency_key="k", concurrency_limit=1)
        for _ in range(10)
    ]

    def start(job: RunnerJob) -> str:
        try:
            report(job, "running")
        except NotRunnableError as exc:
            return ",".join(exc.reasons)
        return "started"

    outcomes = race([partial(start, job) for job in jobs])
    assert sorted(outcomes) == ["concurrency_limit"] * 9 + ["started"]
    assert RunnerJob.objects.filter(pk__in=[j.pk for j in jobs], status="running").count() == 1
