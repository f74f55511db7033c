"""Per-workspace job type policies (services/policies.py) and their terms in the dispatcher's
predicate (services/flow.py): a paused type's jobs do not start, ``max_running`` caps a type's
running jobs like a concurrency key, and a change that lets jobs start rings their bells. Real
PostgreSQL, real threads for the races."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from runner_jobs import services
from runner_jobs.errors import BrokerUnavailableError, JobInputError, JobTypeNotFoundError
from runner_jobs.models import JobTypePolicy, RunnerJob
from runner_jobs.registry import external_type_names
from runner_jobs.services import bell, flow, locking, policies
from runner_jobs.services import jobs as jobs_module
from runner_jobs.services.changes import Change
from runner_jobs.services.policies import job_type_policy_update
from tests.factories import WorkspaceFactory, job_in_state
from tests.runner_jobs.test_concurrency import race
from tests.runner_jobs.test_dispatcher import claim, claim_losing_to_rival, queued

pytestmark = pytest.mark.django_db(transaction=True)


def policy(workspace, type: str = "echo", **fields) -> JobTypePolicy:
    return job_type_policy_update(workspace=workspace, type=type, actor="user:ada", **fields)


def coordinator_claim(limit: int = 10, types=("agent-task",)) -> list[RunnerJob]:
    return services.job_claim(types=list(types), worker="c", limit=limit, actor="coordinator")


@pytest.fixture
def rung(monkeypatch) -> list[dict]:
    """The bells rung (instead of sending them)."""
    calls: list[dict] = []
    monkeypatch.setattr(bell, "bell_ring", lambda **kwargs: calls.append(kwargs))
    return calls


# --- the predicate --------------------------------------------------------------------------


def test_a_paused_type_is_not_claimed_in_its_workspace_only(rung):
    a, b = WorkspaceFactory(), WorkspaceFactory()
    policy(a, paused=True)
    (held,) = queued(a)
    (sleeper,) = queued(a, type="sleep")
    (elsewhere,) = queued(b)
    assert {claim().pk, claim().pk} == {sleeper.pk, elsewhere.pk}
    assert claim() is None
    assert not flow.runnable_exists(exclude_types=external_type_names())
    assert RunnerJob.objects.get(pk=held.pk).status == "queued"
    # Creates still work while paused.
    assert job_in_state("queued", workspace=a).status == "queued"


def test_a_paused_external_type_is_not_claimed_by_coordinators_in_its_workspace_only():
    a, b = WorkspaceFactory(), WorkspaceFactory()
    policy(a, type="agent-task", paused=True)
    queued(a, 2, type="agent-task")
    (elsewhere,) = queued(b, type="agent-task")
    assert [job.pk for job in coordinator_claim()] == [elsewhere.pk]
    policy(a, type="agent-task", paused=False)
    assert len(coordinator_claim()) == 2


def test_the_sweeper_does_not_redispatch_a_paused_types_jobs():
    workspace = WorkspaceFactory()
    (job,) = queued(workspace)
    now = timezone.now() + timedelta(seconds=1)
    runnable = RunnerJob.objects.filter(pk__in=flow.runnable_ids(types=["echo"], now=now))
    assert list(runnable.values_list("pk", flat=True)) == [job.pk]
    policy(workspace, paused=True)
    assert not runnable.exists()


def test_max_running_caps_a_type_in_its_workspace(rung):
    a, b = WorkspaceFactory(), WorkspaceFactory()
    policy(a, max_running=2)
    jobs = queued(a, 4)
    (elsewhere,) = queued(b)
    started = {claim().pk for _ in range(3)}
    assert started == {jobs[0].pk, jobs[1].pk, elsewhere.pk}
    assert claim() is None
    services.job_complete(job_id=jobs[0].pk, result={}, actor="w")
    assert claim().pk == jobs[2].pk
    assert claim() is None


def test_racing_claims_never_exceed_max_running_one(rung):
    """Twelve bells at once on a type capped at 1: exactly one starts (the type's lock and the
    count after it), the rest stay queued."""
    workspace = WorkspaceFactory()
    policy(workspace, max_running=1)
    jobs = queued(workspace, 12)
    results = race([claim for _ in range(12)])
    started = [r for r in results if isinstance(r, RunnerJob)]
    assert len(started) == 1 and all(r is None for r in results if r not in started), results
    statuses = sorted(
        RunnerJob.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
    )
    assert statuses == ["queued"] * 11 + ["running"]


def test_racing_coordinator_claims_never_exceed_max_running():
    workspace = WorkspaceFactory()
    policy(workspace, type="agent-task", max_running=3)
    queued(workspace, 10, type="agent-task")
    results = race([lambda: coordinator_claim(limit=2) for _ in range(6)])
    claimed = [job for result in results for job in result]
    assert len(claimed) == 3, results
    assert RunnerJob.objects.filter(status="running").count() == 3


def test_a_coordinator_claim_counts_what_it_started_against_key_and_cap():
    """One claim over jobs of two capped workspaces and two keys: each cap and key holds within
    the batch (the locks taken in one statement, keys then types, sorted)."""
    a, b = WorkspaceFactory(), WorkspaceFactory()
    policy(a, type="agent-task", max_running=2)
    policy(b, type="agent-task", max_running=3)
    queued(a, 3, type="agent-task", concurrency_key="k1")
    queued(a, 3, type="agent-task")
    queued(b, 2, type="agent-task", concurrency_key="k2", concurrency_limit=2)
    queued(b, 3, type="agent-task", concurrency_key="k1", concurrency_limit=5)
    claimed = coordinator_claim(limit=20)
    by_workspace = {a.pk: 0, b.pk: 0}
    for job in claimed:
        by_workspace[job.workspace_id] += 1
    assert by_workspace == {a.pk: 2, b.pk: 3}
    assert (
        len([job for job in claimed if (job.workspace_id, job.concurrency_key) == (a.pk, "k1")])
        == 1
    )


def test_a_claim_that_lost_the_types_last_slot_is_rolled_back():
    """A rival starts J1 of the capped type under the type's lock; this claim, picking J2 in a
    snapshot that saw none running, waits for the lock, counts two, and rolls back: J2 stays
    queued with no event."""
    workspace = WorkspaceFactory()
    policy(workspace, max_running=1)
    j1, j2 = queued(workspace, 2)
    lock = flow.TYPE_LOCK_SQL.format(workspace="%s", type="%s")
    claim_losing_to_rival(lock, [workspace.pk, "echo"], started=j1, left=j2)


def test_a_keyed_job_of_a_capped_type_must_fit_both(rung):
    workspace = WorkspaceFactory()
    policy(workspace, max_running=2)
    keyed = queued(workspace, 2, concurrency_key="k")
    (plain,) = queued(workspace)
    assert {claim().pk, claim().pk} == {keyed[0].pk, plain.pk}
    assert claim() is None
    services.job_complete(job_id=plain.pk, result={}, actor="w")
    # The type has room again, the key does not.
    assert claim() is None
    assert flow.slot_held(keyed[0], type_cap=2)
    assert not flow.slot_free(keyed[1], type_cap=2)


# --- slots freed ring -------------------------------------------------------------------------


def test_a_capped_types_job_leaving_running_rings_once_per_slot(rung):
    workspace = WorkspaceFactory()
    policy(workspace, max_running=5)
    capped = queued(workspace, 3)
    (keyed,) = queued(workspace, concurrency_key="k")
    (plain,) = queued(WorkspaceFactory())
    for _ in range(5):
        claim()
    services.job_complete(job_id=plain.pk, result={}, actor="w")
    services.job_progress_update(job_id=capped[0].pk, progress=5, actor="w")
    assert rung == []
    services.job_complete(job_id=capped[0].pk, result={}, actor="w")
    assert rung == [{}]
    services.job_fail(job_id=keyed.pk, error="x", actor="w")  # its key's slot and its type's
    assert rung == [{}] * 3
    # The locked path (a transient error) and the optimistic one (a cancel) read it with the job.
    services.job_attempt_failed(job_id=capped[1].pk, error="x", retry_delay=1, actor="w")
    services.job_cancel(job_id=capped[2].pk, actor="u")
    assert rung == [{}] * 5


def test_a_job_read_without_its_policy_asks_for_it_when_it_leaves_running(rung):
    workspace = WorkspaceFactory()
    policy(workspace, max_running=5)
    job = job_in_state("running", workspace=workspace)
    plain = RunnerJob.objects.get(pk=job.pk)
    locking.job_write(plain, Change("job.cancelled", {}, {"status": "cancelled"}), "u")
    assert rung == [{}]


# --- the service ------------------------------------------------------------------------------


def test_a_change_is_written_with_who_made_it():
    workspace = WorkspaceFactory()
    made = policy(workspace, paused=True)
    stored = JobTypePolicy.objects.get()
    assert (stored.pk, stored.paused, stored.max_running) == (made.pk, True, None)
    assert stored.updated_by == "user:ada"
    job_type_policy_update(workspace=workspace, type="echo", actor="staff:bob", max_running=7)
    stored.refresh_from_db()
    assert (stored.paused, stored.max_running, stored.updated_by) == (True, 7, "staff:bob")
    job_type_policy_update(workspace=workspace, type="echo", actor="x", max_running=None)
    stored.refresh_from_db()
    assert (stored.paused, stored.max_running, stored.updated_by) == (True, None, "x")


def test_no_change_writes_no_row():
    workspace = WorkspaceFactory()
    unsaved = policy(workspace, paused=False, max_running=None)
    assert unsaved.pk is None and not JobTypePolicy.objects.exists()


def test_an_unknown_type_is_refused():
    with pytest.raises(JobTypeNotFoundError):
        policy(WorkspaceFactory(), type="nope", paused=True)
    assert not JobTypePolicy.objects.exists()


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"paused": "yes"}, {"paused"}),
        ({"paused": None}, {"paused"}),
        ({"max_running": 0}, {"max_running"}),
        ({"max_running": 1001}, {"max_running"}),
        ({"max_running": True}, {"max_running"}),
        ({"max_running": "3"}, {"max_running"}),
        ({"paused": 1, "max_running": 2.0}, {"paused", "max_running"}),
    ],
)
def test_bad_values_are_refused_and_nothing_is_written(fields, errors):
    workspace = WorkspaceFactory()
    with pytest.raises(JobInputError) as refused:
        policy(workspace, **fields)
    assert set(refused.value.errors) == errors
    assert not JobTypePolicy.objects.exists()


def test_a_first_change_racing_another_insert_locks_that_row_and_applies_to_it(monkeypatch):
    """Another transaction inserts the type's row between this change's read (no row) and its
    insert: the insert is refused by the unique constraint, and the change applies to that row."""
    workspace = WorkspaceFactory()
    real_save = JobTypePolicy.save
    raced: list[bool] = []

    def rival_pauses() -> None:
        policy(workspace, paused=True)
        connection.close()

    def save_after_a_rival(self, *args, **kwargs):
        if not raced:
            raced.append(True)
            rival = threading.Thread(target=rival_pauses)
            rival.start()
            rival.join()
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(JobTypePolicy, "save", save_after_a_rival)
    policy(workspace, max_running=3)
    stored = JobTypePolicy.objects.get()
    assert (stored.paused, stored.max_running) == (True, 3)


def test_racing_changes_of_one_type_lose_none():
    workspace = WorkspaceFactory()
    results = race(
        [lambda: policy(workspace, paused=True)] * 4
        + [lambda: policy(workspace, max_running=9)] * 4
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    stored = JobTypePolicy.objects.get()
    assert (stored.paused, stored.max_running) == (True, 9)


# --- bells after a change that lets jobs start -------------------------------------------------


def test_a_resume_rings_one_bell_per_runnable_queued_job(rung):
    workspace = WorkspaceFactory()
    policy(workspace, paused=True)
    jobs = queued(workspace, 3) + queued(workspace, 1, priority=9)
    later = queued(workspace)[0]
    RunnerJob.objects.filter(pk=later.pk).update(due_at=timezone.now() + timedelta(minutes=5))
    queued(workspace, 2, type="sleep")
    queued(WorkspaceFactory(), 2)
    rung.clear()
    policy(workspace, paused=False)
    assert rung == [{"job_id": str(jobs[3].pk), "priority": 9}] + [
        {"job_id": str(job.pk), "priority": 5} for job in jobs[:3]
    ]


def test_a_resume_under_a_cap_rings_as_many_as_may_start(rung):
    workspace = WorkspaceFactory()
    policy(workspace, max_running=3)
    queued(workspace, 6)
    claim()
    policy(workspace, paused=True)
    rung.clear()
    policy(workspace, paused=False)
    assert len(rung) == 2


@pytest.mark.parametrize(
    ("before", "after", "bells"),
    [
        ({"max_running": 2}, {"max_running": 4}, 2),
        ({"max_running": 2}, {"max_running": None}, 3),
        ({"max_running": 4}, {"max_running": 2}, 0),
        ({"max_running": 2}, {"paused": True, "max_running": 5}, 0),
        ({"max_running": 2}, {"max_running": 2, "paused": False}, 0),
    ],
)
def test_a_raised_cap_rings_for_the_room_it_made(rung, before, after, bells):
    workspace = WorkspaceFactory()
    policy(workspace, **before)
    queued(workspace, 5)
    claim(), claim()
    rung.clear()
    policy(workspace, **after)
    assert len(rung) == bells


def test_a_resume_rings_at_most_resume_bells_max(rung, monkeypatch):
    monkeypatch.setattr(policies, "RESUME_BELLS_MAX", 2)
    workspace = WorkspaceFactory()
    policy(workspace, paused=True)
    queued(workspace, 4)
    rung.clear()
    policy(workspace, paused=False)
    assert len(rung) == 2


def test_a_cap_with_no_room_left_rings_nothing(rung):
    workspace = WorkspaceFactory()
    policy(workspace, max_running=2)
    queued(workspace, 4)
    claim(), claim()
    rung.clear()
    assert policies.job_type_bells_ring(workspace_id=workspace.pk, type="echo", cap=2) == 0
    assert rung == []


def test_an_external_types_resume_rings_no_bell(rung):
    workspace = WorkspaceFactory()
    policy(workspace, type="agent-task", paused=True)
    queued(workspace, 2, type="agent-task")
    policy(workspace, type="agent-task", paused=False)
    assert rung == []


def test_a_resume_with_the_broker_down_stops_ringing_and_says_so(monkeypatch, caplog):
    attempts = []

    def refuse(**kwargs):
        attempts.append(kwargs)
        raise BrokerUnavailableError("down")

    monkeypatch.setattr(bell, "bell_ring", refuse)
    workspace = WorkspaceFactory()
    queued(workspace, 3)
    assert policies.job_type_bells_ring(workspace_id=workspace.pk, type="echo", cap=None) == 0
    assert len(attempts) == 1
    assert "bells not rung (the sweeper will)" in caplog.text


def test_a_resume_rings_after_commit_only(rung):
    workspace = WorkspaceFactory()
    policy(workspace, paused=True)
    queued(workspace)
    rung.clear()
    with transaction.atomic():
        policy(workspace, paused=False)
        assert rung == []
    assert len(rung) == 1


def test_the_claim_loop_gives_up_on_a_paused_type_at_once(monkeypatch):
    """A bell that finds only paused jobs does not look again (they are not runnable)."""
    workspace = WorkspaceFactory()
    policy(workspace, paused=True)
    queued(workspace)
    sleeps: list[float] = []
    monkeypatch.setattr(jobs_module.time, "sleep", sleeps.append)
    assert claim() is None
    assert sleeps == []
