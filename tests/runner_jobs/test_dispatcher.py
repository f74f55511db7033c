"""The dispatcher (services/flow.py): a doorbell claims the best runnable job, fairly between
workspaces, with SKIP LOCKED; the coordinator's claim uses the same predicate. Real PostgreSQL,
real threads for the races."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.registry import external_type_names
from runner_jobs.services import bell, flow, statements
from runner_jobs.services import jobs as jobs_module
from tests.factories import WorkspaceFactory, job_in_state
from tests.runner_jobs.test_concurrency import race

pytestmark = pytest.mark.django_db(transaction=True)


def claim(task_id: str = "t") -> RunnerJob | None:
    return services.job_claim_next(
        actor="worker",
        worker="w",
        task_id=task_id,
        exclude_types=external_type_names(),
        tolerance=0,
    )


def queued(workspace, n: int = 1, **kwargs) -> list[RunnerJob]:
    return [job_in_state("queued", workspace=workspace, **kwargs) for _ in range(n)]


def test_a_claim_starts_the_job_under_a_lease_with_its_event():
    (job,) = queued(WorkspaceFactory())
    claimed = claim(task_id="task-1")
    assert claimed is not None and claimed.pk == job.pk
    job.refresh_from_db()
    assert (job.status, job.attempts, job.version) == ("running", 1, 3)
    assert (job.lease_owner, job.lease_task_id) == ("w", "task-1")
    assert job.lease_token == claimed.lease_token
    started = JobEvent.objects.get(job=job, type="job.started")
    assert started.payload == {"worker": "w", "attempt": 1}
    assert claim() is None


def test_within_a_workspace_priority_then_age():
    workspace = WorkspaceFactory()
    low, high_old, high_new = (
        queued(workspace, priority=1)[0],
        queued(workspace, priority=8)[0],
        queued(workspace, priority=8)[0],
    )
    order = [claim(), claim(), claim()]
    assert [j.pk for j in order if j] == [high_old.pk, high_new.pk, low.pk]


def test_the_workspace_with_fewest_running_jobs_goes_first():
    """A's backlog is older and of higher priority, but A already runs jobs: B's job is next."""
    a, b = WorkspaceFactory(), WorkspaceFactory()
    queued(a, 30, priority=9)
    assert claim().workspace_id == a.pk
    (b_job,) = queued(b, priority=0)
    assert claim().pk == b_job.pk
    # Both run one now: A's head (priority 9) beats B's empty queue and A goes on draining.
    assert claim().workspace_id == a.pk


def test_nothing_runnable_is_claimed():
    workspace = WorkspaceFactory()
    external = queued(workspace, type="agent-task")[0]
    later = queued(workspace)[0]
    RunnerJob.objects.filter(pk=later.pk).update(due_at=timezone.now() + timedelta(minutes=1))
    assert claim() is None
    assert RunnerJob.objects.get(pk=external.pk).status == "queued"
    assert RunnerJob.objects.get(pk=later.pk).status == "queued"


def test_a_job_another_transaction_holds_is_skipped_not_waited_for():
    workspace = WorkspaceFactory()
    first, second = queued(workspace, 2)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            RunnerJob.objects.select_for_update().get(pk=first.pk)
            held.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        assert claim().pk == second.pk
    finally:
        release.set()
        holder.join()
    assert claim().pk == first.pk


def _held_for(job: RunnerJob, seconds: float) -> threading.Thread:
    """Hold ``job``'s row lock in another transaction for ``seconds`` (then roll back)."""
    held = threading.Event()

    def hold() -> None:
        with transaction.atomic():
            RunnerJob.objects.select_for_update().get(pk=job.pk)
            held.set()
            time.sleep(seconds)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    return holder


def test_a_claim_that_finds_only_held_rows_looks_again_and_starts_the_job_once_free():
    """The only runnable job is held by a transaction that does not start it (say an admin's
    lock): the claim does not give up while it is runnable, and takes it once free."""
    (job,) = queued(WorkspaceFactory())
    holder = _held_for(job, 0.05)
    try:
        claimed = claim()
    finally:
        holder.join()
    assert claimed is not None and claimed.pk == job.pk


def test_a_claim_gives_up_after_its_attempts_when_the_runnable_job_stays_held(caplog):
    (job,) = queued(WorkspaceFactory())
    holder = _held_for(job, 1.5)
    try:
        assert claim() is None
    finally:
        holder.join()
    assert "runnable jobs left to other claimers after 5 attempts" in caplog.text
    assert RunnerJob.objects.get(pk=job.pk).status == "queued"


def _ring_into(results: list[RunnerJob | None]) -> None:
    results.append(claim())
    connection.close()


def test_racing_bells_lose_no_job_when_jobs_commit_between_their_snapshots():
    """As many bells as jobs, each rung right after its job's commit while earlier bells are
    still claiming: a bell whose snapshot predates later jobs (and whose visible jobs later bells
    took) looks again instead of leaving one job without a bell. Repeated to give the
    interleaving many chances."""
    workspace = WorkspaceFactory()
    for _ in range(5):
        bells: list[threading.Thread] = []
        results: list[RunnerJob | None] = []

        for _ in range(8):
            queued(workspace)
            bells.append(threading.Thread(target=_ring_into, args=(results,)))
            bells[-1].start()
        for thread in bells:
            thread.join()
        assert sum(r is not None for r in results) == 8
        assert not RunnerJob.objects.filter(workspace_id=workspace.pk, status="queued").exists()
        RunnerJob.objects.filter(workspace_id=workspace.pk).update(status="completed")


def test_racing_bells_each_claim_a_different_job_and_none_is_lost():
    """As many bells as jobs, rung at once from two workspaces: every job starts exactly once."""
    a, b = WorkspaceFactory(), WorkspaceFactory()
    jobs = queued(a, 5) + queued(b, 3)
    results = race([claim for _ in range(len(jobs))])
    claimed = [r.pk for r in results if isinstance(r, RunnerJob)]
    assert sorted(map(str, claimed)) == sorted(str(j.pk) for j in jobs), results
    assert set(RunnerJob.objects.values_list("status", flat=True)) == {"running"}
    assert JobEvent.objects.filter(type="job.started").count() == len(jobs)


def test_the_coordinator_claim_uses_the_same_predicate():
    workspace = WorkspaceFactory()
    due, later = queued(workspace, 2, type="agent-task")
    RunnerJob.objects.filter(pk=later.pk).update(due_at=timezone.now() + timedelta(minutes=1))
    claimed = services.job_claim(types=["agent-task"], worker="c", limit=5, actor="coordinator")
    assert [j.pk for j in claimed] == [due.pk]


def test_a_full_concurrency_key_keeps_its_jobs_queued():
    workspace, other = WorkspaceFactory(), WorkspaceFactory()
    keyed = queued(workspace, 3, concurrency_key="acct-42", concurrency_limit=2)
    # The same key in another workspace is another key.
    (elsewhere,) = queued(other, concurrency_key="acct-42")
    started = {claim().pk, claim().pk, claim().pk}
    assert started == {keyed[0].pk, keyed[1].pk, elsewhere.pk}
    assert claim() is None
    services.job_complete(job_id=keyed[0].pk, result={}, actor="w")
    assert claim().pk == keyed[2].pk


def test_racing_claims_never_exceed_a_key_limit():
    """Twelve bells at once on one key of limit 3: exactly three start (the key's lock and the
    count after it), the rest stay queued, never refused."""
    workspace = WorkspaceFactory()
    jobs = queued(workspace, 12, concurrency_key="k", concurrency_limit=3)
    results = race([claim for _ in range(12)])
    started = [r for r in results if isinstance(r, RunnerJob)]
    assert len(started) == 3 and all(r is None for r in results if r not in started), results
    statuses = sorted(
        RunnerJob.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
    )
    assert statuses == ["queued"] * 9 + ["running"] * 3


def test_a_coordinator_claim_takes_no_more_than_a_key_allows():
    workspace = WorkspaceFactory()
    queued(workspace, 3, type="agent-task", concurrency_key="k", concurrency_limit=2)
    claimed = services.job_claim(types=["agent-task"], worker="c", limit=5, actor="coordinator")
    assert len(claimed) == 2
    assert services.job_claim(types=["agent-task"], worker="c", limit=5, actor="c") == []


def test_a_finished_keyed_job_rings_the_bell_after_commit(monkeypatch):
    rung = []
    monkeypatch.setattr(bell, "bell_ring", lambda **kw: rung.append(kw))
    (job,) = queued(WorkspaceFactory(), concurrency_key="k")
    plain = queued(WorkspaceFactory())[0]
    claim(), claim()
    services.job_complete(job_id=plain.pk, result={}, actor="w")
    assert rung == []
    services.job_fail(job_id=job.pk, error="x", actor="w")
    assert rung == [{}]


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"concurrency_key": ""}, {"concurrency_key"}),
        ({"concurrency_key": "k" * 129}, {"concurrency_key"}),
        ({"concurrency_limit": 2}, {"concurrency_limit"}),
        ({"concurrency_key": "k", "concurrency_limit": 0}, {"concurrency_limit"}),
        ({"concurrency_key": "k", "concurrency_limit": 1001}, {"concurrency_limit"}),
    ],
)
def test_bad_concurrency_fields_are_refused(fields, errors):
    spec = services.JobSpec(type="echo", payload={}, **fields)
    with pytest.raises(services.JobInputError) as refused:
        spec.job_type()
    assert set(refused.value.errors) == errors


def test_ten_racing_creates_with_one_unique_key_make_one_job():
    """Real threads, one connection each: the partial unique index lets exactly one insert;
    the nine others are refused with the live job."""
    workspace = WorkspaceFactory()

    def create() -> RunnerJob:
        spec = services.JobSpec(type="agent-task", payload={}, unique_key="sync-42")
        return services.job_create(workspace=workspace, spec=spec, actor="u").job

    results = race([create for _ in range(10)])
    made = [r for r in results if isinstance(r, RunnerJob)]
    refused = [r for r in results if isinstance(r, services.DuplicateJobError)]
    assert (len(made), len(refused)) == (1, 9), results
    assert {r.job.pk for r in refused} == {made[0].pk}
    assert RunnerJob.objects.filter(workspace_id=workspace.pk).count() == 1
    # Once it ended, the key is free; a retry of the ended job takes it too (while free).
    services.job_cancel(job_id=made[0].pk, actor="u")
    again = create()
    with pytest.raises(services.DuplicateJobError):
        services.job_retry(job_id=made[0].pk, actor="u")
    services.job_cancel(job_id=again.pk, actor="u")
    assert services.job_retry(job_id=made[0].pk, actor="u").unique_key == "sync-42"


def test_a_unique_key_freed_between_the_refusal_and_the_read_is_taken(monkeypatch):
    """The live job ends right after the index refused the insert (a real cancel, at that
    moment): the create finds no live job and inserts."""
    workspace = WorkspaceFactory()
    spec = services.JobSpec(type="agent-task", payload={}, unique_key="k")
    live = services.job_create(workspace=workspace, spec=spec, actor="u").job
    real_insert = statements.job_insert

    def insert_then_end_the_live_job(*args, **kwargs):
        try:
            return real_insert(*args, **kwargs)
        except IntegrityError:
            services.job_cancel(job_id=live.pk, actor="u")
            raise

    monkeypatch.setattr(statements, "job_insert", insert_then_end_the_live_job)
    made = services.job_create(workspace=workspace, spec=spec, actor="u").job
    assert made.pk != live.pk and made.status == "queued"


def test_another_integrity_error_of_a_keyed_insert_is_not_a_duplicate():
    (job,) = queued(WorkspaceFactory())
    twin = RunnerJob(id=job.pk, workspace_id=job.workspace_id, type="echo", unique_key="k")
    with pytest.raises(IntegrityError):
        jobs_module._insert_unique(twin, [("job.created", "u", {})])


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_claim_that_lost_the_last_slot_is_rolled_back(monkeypatch, attempts):
    """A rival claims J1 of key k (limit 1) under the key's lock; this claim, picking J2 in a
    snapshot that saw no running job, waits for the lock, then counts two and rolls back: J2
    stays queued with no event. With attempts left it looks again and finds nothing."""
    monkeypatch.setattr(jobs_module, "CLAIM_ATTEMPTS", attempts)
    workspace = WorkspaceFactory()
    j1, j2 = queued(workspace, 2, concurrency_key="k", concurrency_limit=1)
    lock = flow.KEY_LOCK_SQL.format(workspace="%s", key="%s")
    claim_losing_to_rival(lock, [workspace.pk, "k"], started=j1, left=j2)


def claim_losing_to_rival(lock_sql: str, params: list, *, started: RunnerJob, left: RunnerJob):
    """A rival takes the advisory lock ``lock_sql`` and starts ``started`` (uncommitted, so the
    claim's snapshot sees nothing running: it skips that row and picks ``left``), committing
    while the claim waits for the lock: the claim counts again, finds the slot gone and rolls
    back, so ``left`` stays queued with no event."""
    locked, release = threading.Event(), threading.Event()

    def rival() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SELECT {lock_sql}", params)
            RunnerJob.objects.filter(pk=started.pk).update(status="running")
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=rival)
    thread.start()
    locked.wait(10)
    threading.Timer(0.5, release.set).start()
    try:
        assert claim() is None
    finally:
        release.set()
        thread.join()
    left.refresh_from_db()
    assert (left.status, left.attempts, left.version) == ("queued", 0, 2)
    assert not JobEvent.objects.filter(job=left, type="job.started").exists()
