"""Every transition of the state machine through the service layer: new status, the event
written, the version bump; every refused move changes nothing."""

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.test import override_settings
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import JobEvent, JobStep, RunnerJob
from runner_jobs.registry import job_type_get, job_types
from runner_jobs.services import locking, statements
from runner_jobs.services.events import (
    _listeners,
    event_listener_register,
    events_committed_on_commit,
)
from runner_jobs.services.jobs import WORKER_LOST_ERROR, job_queue, job_recover_lost
from runner_jobs.services.transitions import TRANSITIONS
from tests.factories import UserFactory, WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db


def snapshot(job):
    job = RunnerJob.objects.get(pk=job.pk)
    return (job.status, job.version, job.progress, JobEvent.objects.filter(job=job).count())


def last_event(job):
    return JobEvent.objects.filter(job_id=job.pk).order_by("-id").first()


def assert_refused(job, call, error=services.InvalidTransitionError):
    before = snapshot(job)
    with pytest.raises(error):
        call()
    assert snapshot(job) == before


# --- create ------------------------------------------------------------------------------------


def test_create_writes_queued_job_with_created_and_queued_events(workspace):
    user = UserFactory()
    result = services.job_create(
        workspace=workspace,
        spec=services.JobSpec(type="echo", payload={"a": 1}, priority=7, agent_task_id="ext-1"),
        actor="user:alice",
        created_by=user,
    )
    job = result.job
    assert result.created is True
    assert (job.status, job.version, job.priority, job.max_attempts) == ("queued", 2, 7, 3)
    created, queued = JobEvent.objects.filter(job=job).order_by("id")
    assert (created.type, created.actor, created.payload) == (
        "job.created",
        "user:alice",
        {"type": "echo", "priority": 7},
    )
    assert (queued.type, queued.actor, queued.payload) == ("job.queued", "system", {})
    assert created.timestamp <= queued.timestamp
    assert job.queued_at is not None and job.due_at is not None


def test_create_external_type_is_queued_at_once(workspace):
    job = services.job_create(
        workspace=workspace,
        spec=services.JobSpec(type="agent-task", payload={}),
        actor="coordinator:k",
    ).job
    job.refresh_from_db()
    assert (job.status, job.version) == ("queued", 2)
    assert job.due_at is not None and job.queued_at is not None
    assert list(JobEvent.objects.filter(job=job).values_list("type", flat=True)) == [
        "job.created",
        "job.queued",
    ]


@pytest.mark.parametrize(
    ("type", "payload", "field"),
    [
        ("nope", {}, "type"),
        ("echo", [1, 2], "payload"),
        ("echo", {"x": "y" * (256 * 1024)}, "payload"),
    ],
)
def test_create_rejects_bad_input_and_writes_nothing(workspace, type, payload, field):
    with pytest.raises(services.JobInputError) as exc:
        services.job_create(
            workspace=workspace, spec=services.JobSpec(type=type, payload=payload), actor="system"
        )
    assert field in exc.value.errors
    assert RunnerJob.objects.count() == 0 and JobEvent.objects.count() == 0


def test_create_uses_type_default_max_attempts(workspace):
    with override_settings(RUNNER_JOB_TYPES={"ext": {"external": True, "max_attempts": 7}}):
        job = services.job_create(
            workspace=workspace, spec=services.JobSpec(type="ext", payload={}), actor="s"
        ).job
        assert job.max_attempts == 7
        assert job_type_get("ext").external
        assert "echo" in job_types()
    explicit = services.job_create(
        workspace=workspace,
        spec=services.JobSpec(type="echo", payload={}, max_attempts=9),
        actor="s",
    ).job
    assert explicit.max_attempts == 9


def test_idempotent_create_returns_same_job_or_conflicts(workspace):
    user = UserFactory()
    kwargs = dict(workspace=workspace, actor="u", created_by=user)
    first = services.job_create(
        spec=services.JobSpec(type="echo", payload={"a": 1}), idempotency_key="k1", **kwargs
    )
    again = services.job_create(
        spec=services.JobSpec(type="echo", payload={"a": 1}), idempotency_key="k1", **kwargs
    )
    assert first.created and not again.created
    assert again.job.pk == first.job.pk
    with pytest.raises(services.IdempotencyConflictError):
        services.job_create(
            spec=services.JobSpec(type="echo", payload={"a": 2}), idempotency_key="k1", **kwargs
        )
    other_user = services.job_create(
        workspace=workspace,
        spec=services.JobSpec(type="echo", payload={"a": 1}),
        actor="u",
        created_by=UserFactory(),
        idempotency_key="k1",
    )
    assert other_user.created and other_user.job.pk != first.job.pk
    assert RunnerJob.objects.count() == 2


def test_idempotent_create_losing_the_insert_race_returns_the_winner(workspace, monkeypatch):
    """The unique constraint is what decides a race; simulate the loser's view of it."""
    user = UserFactory()
    kwargs = dict(
        workspace=workspace,
        actor="u",
        created_by=user,
        spec=services.JobSpec(type="echo", payload={}),
    )
    winner = services.job_create(idempotency_key="race", **kwargs).job
    real_filter = RunnerJob.objects.filter
    calls = {"n": 0}

    def first_lookup_misses(*args, **kw):
        calls["n"] += 1
        qs = real_filter(*args, **kw)
        return qs.none() if calls["n"] == 1 else qs

    monkeypatch.setattr(RunnerJob.objects, "filter", first_lookup_misses)
    again = services.job_create(idempotency_key="race", **kwargs)
    assert (again.created, again.job.pk) == (False, winner.pk)


def test_integrity_errors_other_than_idempotency_propagate(workspace):
    user = UserFactory()
    for key in (None, "k"):
        with pytest.raises(IntegrityError), transaction.atomic():
            services.job_create(
                workspace=workspace,
                spec=services.JobSpec(type="echo", payload={}, priority=42),
                actor="u",
                created_by=user,
                idempotency_key=key,
            )


# --- queue, start, progress ------------------------------------------------------------------


def test_queue_then_start_gives_a_lease():
    job = job_in_state("pending")
    job = job_queue(job_id=job.pk, actor="system")
    assert (job.status, job.version) == ("queued", 2)
    assert last_event(job).type == "job.queued"
    job = services.job_start(job_id=job.pk, actor="worker", worker="w1")
    job.refresh_from_db()
    assert (job.status, job.version, job.attempts) == ("running", 3, 1)
    assert job.lease_token is not None and job.lease_owner == "w1"
    assert job.lease_expires_at > timezone.now()
    assert last_event(job).payload == {"attempt": 1, "worker": "w1"}


def test_start_from_pending_or_running_is_refused():
    pending = job_in_state("pending")
    assert_refused(pending, lambda: services.job_start(job_id=pending.pk, actor="w", worker="w"))
    running = job_in_state("running")
    assert_refused(running, lambda: services.job_start(job_id=running.pk, actor="w", worker="w"))
    assert_refused(running, lambda: job_queue(job_id=running.pk, actor="w"))


def test_progress_never_decreases_and_renews_lease():
    job = job_in_state("running")
    old_expiry = job.lease_expires_at
    job = services.job_progress_update(job_id=job.pk, progress=60, actor="worker", message="m")
    assert last_event(job).payload == {"progress": 60, "message": "m"}
    job = services.job_progress_update(job_id=job.pk, progress=20, actor="worker")
    job.refresh_from_db()
    assert (job.progress, job.version) == (60, 5)
    assert last_event(job).payload == {"progress": 60}
    assert job.lease_expires_at >= old_expiry


def test_progress_refused_outside_running_or_range():
    queued = job_in_state("queued")
    assert_refused(
        queued, lambda: services.job_progress_update(job_id=queued.pk, progress=5, actor="w")
    )
    running = job_in_state("running")
    for bad in (-1, 101):
        assert_refused(
            running,
            lambda bad=bad: services.job_progress_update(
                job_id=running.pk, progress=bad, actor="w"
            ),
            services.JobInputError,
        )


# --- terminal transitions ----------------------------------------------------------------------


def test_complete_sets_result_progress_and_clears_lease():
    job = job_in_state("running")
    job = services.job_complete(
        job_id=job.pk, result={"r": 1}, actor="worker", lease_token=job.lease_token
    )
    job.refresh_from_db()
    assert (job.status, job.result, job.progress, job.version) == ("completed", {"r": 1}, 100, 4)
    assert job.completed_at is not None and job.lease_token is None
    assert (last_event(job).type, last_event(job).actor) == ("job.completed", "worker")


def test_fail_keeps_error():
    job = job_in_state("running")
    job = services.job_fail(job_id=job.pk, error="bad", actor="worker")
    job.refresh_from_db()
    assert (job.status, job.error, job.version) == ("failed", "bad", 4)
    assert last_event(job).payload == {"error": "bad", "attempt": 1}


@pytest.mark.parametrize("status", ["pending", "queued", "running"])
def test_cancel_from_every_live_state(status):
    job = job_in_state(status)
    version = job.version
    job = services.job_cancel(job_id=job.pk, actor="user:alice", expected_version=version)
    job.refresh_from_db()
    assert (job.status, job.version) == ("cancelled", version + 1)
    assert job.completed_at is not None
    event = last_event(job)
    assert (event.type, event.actor, event.payload) == (
        "job.cancelled",
        "user:alice",
        {"from": status},
    )


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_nothing_leaves_a_terminal_state(status):
    job = job_in_state(status)
    calls = [
        lambda: services.job_cancel(job_id=job.pk, actor="u"),
        lambda: services.job_complete(job_id=job.pk, result=None, actor="w"),
        lambda: services.job_fail(job_id=job.pk, error="x", actor="w"),
        lambda: job_queue(job_id=job.pk, actor="w"),
        lambda: services.job_start(job_id=job.pk, actor="w", worker="w"),
        lambda: services.job_attempt_failed(job_id=job.pk, error="e", retry_delay=1, actor="w"),
        lambda: services.event_append(job_id=job.pk, type="agent.note", actor="c"),
    ]
    for call in calls:
        assert_refused(job, call)


def test_complete_and_fail_refused_before_running():
    job = job_in_state("queued")
    assert_refused(job, lambda: services.job_complete(job_id=job.pk, result=None, actor="w"))
    assert_refused(job, lambda: services.job_fail(job_id=job.pk, error="e", actor="w"))


def test_if_match_mismatch_is_precondition_failed():
    job = job_in_state("queued")
    assert_refused(
        job,
        lambda: services.job_cancel(job_id=job.pk, actor="u", expected_version=1),
        services.PreconditionFailedError,
    )


def test_unknown_job_is_not_found():
    for job_id in (uuid.uuid4(), "not-a-uuid"):
        with pytest.raises(services.JobNotFoundError):
            services.job_cancel(job_id=job_id, actor="u")
        with pytest.raises(services.JobNotFoundError):
            services.job_complete(job_id=job_id, result=None, actor="u")


# --- fencing -------------------------------------------------------------------------------


def test_stale_lease_is_refused_and_current_lease_accepted():
    job = job_in_state("running")
    stale = uuid.uuid4()
    for call in (
        lambda: services.job_complete(job_id=job.pk, result=1, actor="w", lease_token=stale),
        lambda: services.job_fail(job_id=job.pk, error="e", actor="w", lease_token=stale),
        lambda: services.job_progress_update(
            job_id=job.pk, progress=5, actor="w", lease_token=stale
        ),
        lambda: services.step_start(
            job_id=job.pk, name="s", phase="setup", actor="w", lease_token=stale
        ),
        lambda: services.event_append(job_id=job.pk, type="a.b", actor="w", lease_token=str(stale)),
        lambda: services.job_attempt_failed(
            job_id=job.pk, error="e", retry_delay=1, actor="w", lease_token=stale
        ),
    ):
        assert_refused(job, call, services.StaleLeaseError)
    services.job_complete(job_id=job.pk, result=1, actor="w", lease_token=str(job.lease_token))


def test_lease_of_an_earlier_attempt_cannot_touch_the_requeued_job():
    job = job_in_state("running")
    first_lease = job.lease_token
    RunnerJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    job_recover_lost(job_id=job.pk)
    assert_refused(
        job,
        lambda: services.job_complete(job_id=job.pk, result=1, actor="w", lease_token=first_lease),
        services.StaleLeaseError,
    )
    job = services.job_start(job_id=job.pk, actor="w", worker="w2")
    assert job.attempts == 2 and job.lease_token != first_lease
    assert_refused(
        job,
        lambda: services.job_complete(job_id=job.pk, result=1, actor="w", lease_token=first_lease),
        services.StaleLeaseError,
    )


def test_lease_renew_extends_only_the_current_lease():
    job = job_in_state("running")
    RunnerJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    assert services.job_lease_renew(job_id=job.pk, lease_token=job.lease_token)
    job.refresh_from_db()
    assert job.lease_expires_at > timezone.now() + timedelta(seconds=30)
    assert job.version == 3  # a heartbeat is not a change of state
    assert not services.job_lease_renew(job_id=job.pk, lease_token=uuid.uuid4())


# --- attempts, retries and recovery ------------------------------------------------------------


def test_transient_failure_with_attempts_left_schedules_a_retry():
    job = job_in_state("running")
    job = services.job_attempt_failed(
        job_id=job.pk, error="flaky", retry_delay=4.0, actor="worker", lease_token=job.lease_token
    )
    job.refresh_from_db()
    assert (job.status, job.version, job.lease_token) == ("queued", 4, None)
    assert job.due_at > timezone.now() + timedelta(seconds=3)
    assert last_event(job).payload == {"attempt": 1, "delay": 4.0, "error": "flaky"}


def test_failure_without_retry_or_attempts_left_fails():
    permanent = job_in_state("running")
    services.job_attempt_failed(job_id=permanent.pk, error="no", retry_delay=None, actor="w")
    assert RunnerJob.objects.get(pk=permanent.pk).status == "failed"
    exhausted = job_in_state("running", max_attempts=1)
    services.job_attempt_failed(job_id=exhausted.pk, error="again", retry_delay=1, actor="w")
    exhausted.refresh_from_db()
    assert (exhausted.status, exhausted.error) == ("failed", "again")


def test_recover_lost_requeues_then_fails_when_attempts_are_spent():
    job = job_in_state("running", max_attempts=2)
    assert_refused(job, lambda: job_recover_lost(job_id=job.pk))  # lease still valid
    RunnerJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    job = job_recover_lost(job_id=job.pk)
    assert (job.status, last_event(job).payload) == (
        "queued",
        {"reason": "lease_expired", "attempt": 1},
    )
    services.job_start(job_id=job.pk, actor="w", worker="w")
    RunnerJob.objects.filter(pk=job.pk).update(lease_expires_at=None)
    job = job_recover_lost(job_id=job.pk)
    assert (job.status, job.error) == ("failed", WORKER_LOST_ERROR)
    assert_refused(job, lambda: job_recover_lost(job_id=job.pk))


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_retry_makes_a_linked_job(status):
    old = job_in_state(status, payload={"p": 1}, priority=8)
    user = UserFactory()
    new = services.job_retry(job_id=old.pk, actor="user:bob", created_by=user)
    old.refresh_from_db()
    assert (new.retry_of_id, new.type, new.payload, new.priority) == (old.pk, "echo", {"p": 1}, 8)
    assert (new.status, new.version, new.created_by) == ("queued", 2, user)
    assert last_event(old).type == "job.retried"
    assert last_event(old).payload == {"retry_job_id": str(new.pk)}
    created = JobEvent.objects.filter(job=new, type="job.created").get()
    assert created.payload["retry_of"] == str(old.pk)


@pytest.mark.parametrize("status", ["pending", "queued", "running", "completed"])
def test_retry_refused_unless_failed_or_cancelled(status):
    job = job_in_state(status)
    assert_refused(job, lambda: services.job_retry(job_id=job.pk, actor="u"))
    assert RunnerJob.objects.count() == 1


def test_retry_of_a_type_no_longer_registered_is_refused():
    with override_settings(RUNNER_JOB_TYPES={"gone": {"handler": "x.y"}}):
        job = job_in_state("failed", type="gone")
    assert_refused(
        job, lambda: services.job_retry(job_id=job.pk, actor="u"), services.JobInputError
    )


# --- claims ------------------------------------------------------------------------------------


def test_claim_takes_due_jobs_by_priority_then_age():
    ws = WorkspaceFactory()
    low = job_in_state("queued", workspace=ws, type="agent-task", priority=1)
    high = job_in_state("queued", workspace=ws, type="agent-task", priority=9)
    later = job_in_state("queued", workspace=ws, type="agent-task", priority=9)
    not_due = job_in_state("queued", workspace=ws, type="agent-task", priority=9)
    RunnerJob.objects.filter(pk=not_due.pk).update(due_at=timezone.now() + timedelta(hours=1))
    job_in_state("queued", workspace=ws, type="echo")
    claimed = services.job_claim(types=["agent-task"], worker="c1", limit=2, actor="coordinator:k")
    assert [j.pk for j in claimed] == [high.pk, later.pk]
    assert all(j.status == "running" and j.lease_token and j.attempts == 1 for j in claimed)
    rest = services.job_claim(types=["agent-task"], worker="c1", limit=10, actor="c")
    assert [j.pk for j in rest] == [low.pk]


def test_claim_honours_workspace_scope():
    inside, outside = WorkspaceFactory(), WorkspaceFactory()
    mine = job_in_state("queued", workspace=inside, type="agent-task")
    job_in_state("queued", workspace=outside, type="agent-task")
    claimed = services.job_claim(
        types=["agent-task"], worker="c", limit=10, actor="c", workspace_ids=[inside.pk]
    )
    assert [j.pk for j in claimed] == [mine.pk]


# --- steps and custom events ------------------------------------------------------------------


def test_steps_start_and_finish_with_events():
    job = job_in_state("running")
    first = services.step_start(job_id=job.pk, name="fetch", phase="setup", actor="c")
    second = services.step_start(job_id=job.pk, name="run", phase="execution", actor="c")
    assert (first.ordinal, second.ordinal, first.status) == (1, 2, "running")
    step = services.step_finish(
        job_id=job.pk, step_id=first.pk, status="running", output="half ", actor="c"
    )
    assert last_event(job).type == "step.output" and last_event(job).step_id == first.pk
    step = services.step_finish(
        job_id=job.pk, step_id=first.pk, status="completed", output="done", actor="c"
    )
    step.refresh_from_db()
    assert (step.status, step.output) == ("completed", "half done")
    assert step.duration_ms is not None and step.completed_at is not None
    assert last_event(job).payload == {
        "step": 1,
        "name": "fetch",
        "status": "completed",
        "output": "done",
    }
    services.step_finish(job_id=job.pk, step_id=second.pk, status="skipped", actor="c")
    assert last_event(job).type == "step.skipped"
    assert RunnerJob.objects.get(pk=job.pk).version == 3 + 5
    assert_refused(
        job,
        lambda: services.step_finish(job_id=job.pk, step_id=first.pk, status="failed", actor="c"),
    )


def test_step_output_is_held_to_the_payload_limit_in_all(settings):
    """One size rule for what clients store: a step's whole output, as it would be stored."""
    settings.RUNNER_MAX_PAYLOAD_BYTES = 10
    job = job_in_state("running")
    step = services.step_start(job_id=job.pk, name="s", phase="setup", actor="c")
    services.step_finish(
        job_id=job.pk, step_id=step.pk, status="running", output="12345", actor="c"
    )
    version = RunnerJob.objects.get(pk=job.pk).version
    with pytest.raises(services.JobInputError) as refused:
        services.step_finish(
            job_id=job.pk, step_id=step.pk, status="completed", output="é12345", actor="c"
        )
    assert refused.value.errors == {"output": ["Must be at most 10 bytes."]}
    step.refresh_from_db()
    assert (step.status, step.output) == ("running", "12345")
    assert RunnerJob.objects.get(pk=job.pk).version == version
    assert JobEvent.objects.filter(job=job).count() == version


def test_a_job_is_retried_once():
    job = job_in_state("failed")
    services.job_retry(job_id=job.pk, actor="u")
    assert_refused(job, lambda: services.job_retry(job_id=job.pk, actor="u"))


def test_step_input_errors():
    job = job_in_state("running")
    other = job_in_state("running")
    step = services.step_start(job_id=other.pk, name="s", phase="setup", actor="c")
    with pytest.raises(services.JobInputError):
        services.step_start(job_id=job.pk, name="s", phase="nope", actor="c")
    with pytest.raises(services.JobInputError):
        services.step_finish(job_id=job.pk, step_id=step.pk, status="pending", actor="c")
    with pytest.raises(services.StepNotFoundError):
        services.step_finish(job_id=job.pk, step_id=step.pk, status="completed", actor="c")
    with pytest.raises(services.StepNotFoundError):
        services.event_append(job_id=job.pk, type="a.b", actor="c", step_id=step.pk)
    queued = job_in_state("queued")
    assert_refused(
        queued, lambda: services.step_start(job_id=queued.pk, name="s", phase="setup", actor="c")
    )
    assert JobStep.objects.filter(job=job).count() == 0


def test_custom_event_on_live_job_bumps_version():
    job = job_in_state("queued")
    job = services.event_append(
        job_id=job.pk, type="agent.thought", payload={"t": "hm"}, actor="coordinator:k"
    )
    assert job.version == 3
    event = last_event(job)
    assert (event.type, event.actor, event.payload) == (
        "agent.thought",
        "coordinator:k",
        {"t": "hm"},
    )
    running = job_in_state("running")
    step = services.step_start(job_id=running.pk, name="s", phase="setup", actor="c")
    services.event_append(job_id=running.pk, type="agent.tool_call", actor="c", step_id=step.pk)
    assert last_event(running).step_id == step.pk


@pytest.mark.parametrize(
    ("type", "payload", "field"),
    [
        ("NotDotted", {}, "type"),
        ("job.completed", {}, "type"),
        ("step.started", {}, "type"),
        ("a." + "b" * 64, {}, "type"),
        ("a.b", ["list"], "payload"),
        ("a.b", {"x": "y" * (64 * 1024)}, "payload"),
    ],
)
def test_custom_event_bad_input(type, payload, field):
    job = job_in_state("running")
    before = snapshot(job)
    with pytest.raises(services.JobInputError) as exc:
        services.event_append(job_id=job.pk, type=type, payload=payload, actor="c")
    assert field in exc.value.errors
    assert snapshot(job) == before


# --- the table ---------------------------------------------------------------------------------


def test_transition_table_is_the_spec():
    s = TRANSITIONS
    assert s["pending"] == {"queued", "cancelled", "expired"}
    assert s["queued"] == {"running", "cancelled", "expired"}
    assert s["running"] == {"completed", "failed", "cancelled", "queued"}
    assert s["completed"] == s["failed"] == s["cancelled"] == s["expired"] == set()


def test_side_effects_of_a_change_run_after_commit(django_capture_on_commit_callbacks):
    job = job_in_state("running")
    seen: list[str] = []

    def plan(current: RunnerJob) -> locking.Change:
        return locking.Change("x.y", on_commit=lambda: seen.append("after"))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        locking.job_update_locked(job_id=job.pk, plan=plan, actor="a")
        assert seen == []
    assert seen == ["after"] and len(callbacks) >= 1


def test_a_conditional_write_that_keeps_missing_an_acceptable_job_gives_up(monkeypatch):
    """The job reads as acceptable each time the conditional statement matched nothing (it
    changed in between, three times): 409 ``concurrent_update``, nothing written."""
    job = job_in_state("running")
    monkeypatch.setattr(statements, "job_update_where", lambda **write: None)
    assert_refused(
        job,
        lambda: services.job_progress_update(job_id=job.pk, progress=5, actor="w"),
        services.ConcurrentUpdateError,
    )


def test_an_event_listener_is_registered_once_and_a_write_without_events_rings_nothing(
    django_capture_on_commit_callbacks,
):
    calls: list[int] = []

    def listener(events: list[JobEvent], workspace_id: int) -> None:
        calls.append(len(events))

    event_listener_register(listener)
    event_listener_register(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            events_committed_on_commit([], workspace_id=1)
            job_in_state("queued")
    finally:
        _listeners.remove(listener)
    assert calls == [2]  # the create's two events, once
