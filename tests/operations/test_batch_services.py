"""The set-based batch services of bulk operations (``jobs_cancel``, ``jobs_retry``): the same
rules, events and side effects as a single cancel or retry, in a fixed number of statements per
batch (docs/decisions/0131-bulk-operations.md)."""

import json
import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from config.redis_client import redis_client
from job_events import listeners
from job_events.herald import webhook_endpoints_memo, webhook_endpoints_memoized
from job_events.models import PendingDelivery, WebhookEndpoint
from runner_jobs import metrics, services
from runner_jobs.errors import ConcurrentUpdateError, InvalidTransitionError, JobNotFoundError
from runner_jobs.events import EventType
from runner_jobs.models import JobEvent, Operation, RunnerJob
from runner_jobs.services import bell, operations
from runner_jobs.services.changes import Change
from runner_jobs.services.jobs import jobs_cancel, jobs_retry
from runner_jobs.services.locking import jobs_lock, jobs_write
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

EXTRA = {"operation": "op-1"}
TRANSITIONS_FIELD = json.dumps(["runner_jobs_transitions", "job.cancelled"])


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries]


def test_a_cancel_batch_applies_the_single_cancel_rules_to_each_job(workspace):
    queued = job_in_state("queued", workspace=workspace, type="agent-task")
    running = job_in_state("running", workspace=workspace, type="agent-task")
    done = job_in_state("completed", workspace=workspace)
    missing = uuid.uuid4()
    versions = {job.pk: job.version for job in (queued, running, done)}
    with transaction.atomic():
        outcome = jobs_cancel(
            job_ids=[queued.pk, running.pk, done.pk, missing], actor="user:alice", event_extra=EXTRA
        )
    assert sorted(job.pk for job in outcome.changed) == sorted([queued.pk, running.pk])
    assert set(outcome.refused) == {done.pk, missing}
    assert isinstance(outcome.refused[done.pk], InvalidTransitionError)
    assert isinstance(outcome.refused[missing], JobNotFoundError)
    for job, was in ((queued, "queued"), (running, "running")):
        job.refresh_from_db()
        assert (job.status, job.version) == ("cancelled", versions[job.pk] + 1)
        assert job.completed_at is not None
        assert (job.lease_token, job.lease_expires_at) == (None, None)
        event = JobEvent.objects.filter(job=job).latest("id")
        assert (event.type, event.actor, event.payload) == (
            EventType.JOB_CANCELLED,
            "user:alice",
            {"from": was, "operation": "op-1"},
        )
        assert job.version == JobEvent.objects.filter(job=job).count()
    done.refresh_from_db()
    assert (done.status, done.version) == ("completed", versions[done.pk])


def test_a_cancel_batch_is_two_statements_whatever_its_size(workspace):
    """The rows locked in one statement, the changes and their events in another."""
    for size in (3, 30):
        ids = [
            job_in_state("queued", workspace=workspace, type="agent-task").pk for _ in range(size)
        ]
        with webhook_endpoints_memo(), transaction.atomic():
            webhook_endpoints_memoized(workspace.pk)
            with CaptureQueriesContext(connection) as captured:
                outcome = jobs_cancel(job_ids=ids, actor="u", event_extra=EXTRA)
        sql = statements(captured)
        assert len(sql) == 2, sql
        assert "FOR UPDATE OF" in sql[0]
        assert sql[1].startswith("WITH batch AS (SELECT * FROM unnest(")
        assert len(outcome.changed) == size


@pytest.mark.parametrize(
    ("action", "status", "expected"), [("cancel", "queued", 6), ("retry", "failed", 8)]
)
def test_an_operation_batch_costs_the_same_statements_for_ten_or_a_hundred_jobs(
    workspace, action, status, expected
):
    """The operation's read, its batch of rows, the jobs' lock and write, the rows' deletion and
    the counts: six statements per batch of any size (and the savepoints of the batch and of
    its set-based write); a retry also reads the earlier retries and inserts the new jobs."""
    counted = []
    for size in (10, 100):
        tag = f"size-{size}"
        for _ in range(size):
            job_in_state(status, workspace=workspace, type="agent-task", tags=[tag])
        operation = operations.operation_create(
            workspace=workspace, action=action, filters={"tag": [tag]}, actor="u"
        )
        with webhook_endpoints_memo():
            webhook_endpoints_memoized(workspace.pk)
            with CaptureQueriesContext(connection) as captured:
                assert operations._batch_run(operation.pk) is True
        sql = [q for q in statements(captured) if not q.startswith(("SAVEPOINT", "RELEASE"))]
        counted.append(len(sql))
        assert Operation.objects.get(pk=operation.pk).succeeded == size
    assert counted == [expected, expected], sql


def test_a_batch_records_webhook_deliveries_wakes_every_jobs_streams_and_counts_once(
    workspace, monkeypatch, django_capture_on_commit_callbacks
):
    WebhookEndpoint.objects.create(
        workspace=workspace,
        url="https://hooks.example.com/in",
        event_types=["job.cancelled"],
        secret="whsec_x",
    )
    ids = [job_in_state("queued", workspace=workspace, type="agent-task").pk for _ in range(5)]
    woken: list[list[str]] = []
    monkeypatch.setattr(listeners, "job_events_notify", lambda *, job_ids: woken.append(job_ids))
    published: list[list[int]] = []
    monkeypatch.setattr(listeners, "webhook_deliveries_publish", published.append)
    counter = redis_client().hget(metrics.COUNTERS_KEY, TRANSITIONS_FIELD)
    before = int(counter or 0)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        jobs_cancel(job_ids=ids, actor="u", event_extra=EXTRA)
    events = JobEvent.objects.filter(type=EventType.JOB_CANCELLED, job_id__in=ids)
    assert PendingDelivery.objects.filter(event__in=events).count() == 5
    assert len(published) == 1 and len(published[0]) == 5
    assert woken == [sorted(ids)]
    counter = redis_client().hget(metrics.COUNTERS_KEY, TRANSITIONS_FIELD)
    assert int(counter or 0) - before == 5


def test_a_batch_across_workspaces_hands_each_workspace_its_own_events(
    workspace, monkeypatch, django_capture_on_commit_callbacks
):
    other = WorkspaceFactory()
    mine = job_in_state("queued", workspace=workspace, type="agent-task")
    theirs = job_in_state("queued", workspace=other, type="agent-task")
    handed: list[tuple[int, list[uuid.UUID]]] = []
    monkeypatch.setattr(
        "runner_jobs.services.events._listeners",
        [lambda events, workspace_id: handed.append((workspace_id, [e.job_id for e in events]))],
    )
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        jobs_cancel(job_ids=[mine.pk, theirs.pk], actor="staff:bob")
    assert sorted(handed) == sorted([(workspace.pk, [mine.pk]), (other.pk, [theirs.pk])])


def test_cancelling_running_keyed_jobs_in_a_batch_rings_once_per_freed_slot(
    workspace, monkeypatch, django_capture_on_commit_callbacks
):
    keyed = [
        job_in_state("running", workspace=workspace, concurrency_key="k", concurrency_limit=2)
        for _ in range(2)
    ]
    plain = job_in_state("running", workspace=workspace)
    rings = []
    monkeypatch.setattr(bell, "_ring_quietly", lambda: rings.append(1))
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        jobs_cancel(job_ids=[*(job.pk for job in keyed), plain.pk], actor="u")
    assert len(rings) == 2


def test_a_retry_batch_applies_the_single_retry_rules_to_each_job(
    workspace, user, monkeypatch, django_capture_on_commit_callbacks
):
    failed = job_in_state("failed", workspace=workspace, tags=["t"])
    cancelled = job_in_state("cancelled", workspace=workspace, type="agent-task")
    already = job_in_state("failed", workspace=workspace)
    earlier = operations.job_retry(job_id=already.pk, actor="system")
    queued = job_in_state("queued", workspace=workspace)
    olds = {job.pk: (job.status, job.version) for job in (failed, cancelled)}
    rung: list[uuid.UUID] = []
    monkeypatch.setattr(
        "runner_jobs.services.jobs.job_publish_on_commit", lambda job: rung.append(job.retry_of_id)
    )
    with (
        django_capture_on_commit_callbacks(execute=True),
        webhook_endpoints_memo(),
        transaction.atomic(),
    ):
        webhook_endpoints_memoized(workspace.pk)
        with CaptureQueriesContext(connection) as captured:
            outcome = jobs_retry(
                job_ids=[failed.pk, cancelled.pk, already.pk, queued.pk],
                actor="user:alice",
                created_by=user,
                event_extra=EXTRA,
            )
    # Lock, earlier retries, the old jobs' events, the new jobs and theirs.
    sql = statements(captured)
    assert len(sql) == 4, sql
    assert sql[3].startswith('WITH job AS (INSERT INTO "runner_jobs_runnerjob"')
    assert sorted(job.pk for job in outcome.changed) == sorted([failed.pk, cancelled.pk])
    assert {pk: type(exc) for pk, exc in outcome.refused.items()} == {
        already.pk: InvalidTransitionError,
        queued.pk: InvalidTransitionError,
    }
    for old in (failed, cancelled):
        new = RunnerJob.objects.get(retry_of=old)
        assert (new.status, new.type, new.payload, new.tags, new.created_by, new.version) == (
            "queued",
            old.type,
            old.payload,
            old.tags,
            user,
            2,
        )
        retried = JobEvent.objects.get(job=old, type=EventType.JOB_RETRIED)
        assert (retried.actor, retried.payload) == (
            "user:alice",
            {"retry_job_id": str(new.pk), "operation": "op-1"},
        )
        events = list(JobEvent.objects.filter(job=new).order_by("id"))
        assert [(e.type, e.actor) for e in events] == [
            ("job.created", "user:alice"),
            ("job.queued", "user:alice" if old.type == "agent-task" else "system"),
        ]
        assert events[0].payload == {
            "type": old.type,
            "priority": 5,
            "retry_of": str(old.pk),
            "operation": "op-1",
        }
        old.refresh_from_db()
        assert (old.status, old.version) == (olds[old.pk][0], olds[old.pk][1] + 1)
    assert RunnerJob.objects.filter(retry_of=already).get() == earlier
    # Only the Celery-run job rings the doorbell; the external one waits for a coordinator.
    assert rung == [failed.pk]


def test_a_retry_batch_inserts_a_keyed_new_job_as_a_single_retry_does(workspace):
    keyed = job_in_state("failed", workspace=workspace, unique_key="nightly")
    plain = job_in_state("failed", workspace=workspace)
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        outcome = jobs_retry(job_ids=[keyed.pk, plain.pk], actor="u")
    assert len(outcome.changed) == 2
    assert RunnerJob.objects.get(retry_of=keyed).unique_key == "nightly"
    assert RunnerJob.objects.filter(retry_of=plain).exists()
    inserts = [q for q in statements(captured) if q.startswith("WITH job AS (INSERT")]
    assert len(inserts) == 2  # the keyed one alone, the rest together


def test_a_retry_batch_with_nothing_to_retry_inserts_nothing(workspace):
    queued = job_in_state("queued", workspace=workspace)
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        outcome = jobs_retry(job_ids=[queued.pk], actor="u")
    assert (outcome.changed, list(outcome.refused)) == ([], [queued.pk])
    assert not any("INSERT" in q for q in statements(captured))


@pytest.mark.django_db(transaction=True)
def test_jobs_are_locked_only_inside_a_transaction():
    with pytest.raises(RuntimeError):
        jobs_lock([uuid.uuid4()])


def test_a_batch_writes_changes_of_one_kind_only(workspace):
    jobs = [job_in_state("queued", workspace=workspace, type="agent-task") for _ in range(2)]
    with transaction.atomic():
        locked = jobs_lock([job.pk for job in jobs])
        with pytest.raises(ValueError):
            jobs_write(
                [
                    (locked[0], Change(EventType.JOB_CANCELLED, {}, {"status": "cancelled"})),
                    (locked[1], Change(EventType.JOB_CANCELLED, {}, {"status": "queued"})),
                ],
                "u",
            )
        with CaptureQueriesContext(connection) as captured:
            jobs_write([], "u")
        assert statements(captured) == []


def test_a_job_whose_version_moved_fails_the_whole_batch(workspace):
    jobs = [job_in_state("queued", workspace=workspace, type="agent-task") for _ in range(2)]
    with pytest.raises(ConcurrentUpdateError), transaction.atomic():
        locked = jobs_lock([job.pk for job in jobs])
        locked[1].version -= 1  # as if read before another change
        change = Change(EventType.JOB_CANCELLED, {}, {"status": "cancelled"})
        jobs_write([(job, change) for job in locked], "u")
    assert set(RunnerJob.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status")) == {
        ("queued",)
    }
    assert not JobEvent.objects.filter(type=EventType.JOB_CANCELLED).exists()


def test_batches_follow_the_rule_table_for_expired_jobs(workspace):
    """``expired`` is terminal (a cancel leaves it) and retryable (a retry makes a new job with
    the old one's ttl): the batch services read the same table as the single ones."""
    job = job_in_state("queued", workspace=workspace, ttl_seconds=5)
    RunnerJob.objects.filter(pk=job.pk).update(expires_at=job.created_at)  # setup: past it
    services.job_expire(job_id=job.pk)
    with transaction.atomic():
        cancelled = jobs_cancel(job_ids=[job.pk], actor="u")
        retried = jobs_retry(job_ids=[job.pk], actor="u")
    assert isinstance(cancelled.refused[job.pk], InvalidTransitionError)
    assert [j.pk for j in retried.changed] == [job.pk]
    new = RunnerJob.objects.get(retry_of=job)
    assert (new.status, new.ttl_seconds, new.expires_at is not None) == ("queued", 5, True)
