"""The operations service directly: outcomes counted as failed, runs that stop and resume, two
runs of one operation at once, and a real worker working through a thousand jobs."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from runner_jobs import services
from runner_jobs.errors import JobInputError, JobNotFoundError
from runner_jobs.models import JobEvent, Operation, RunnerJob
from runner_jobs.services import operations
from tests.execution.conftest import broker_url
from tests.execution.test_dispatch_and_sweeper import DOWN_BROKER, queued_messages
from tests.factories import UserFactory, WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db


def start(workspace, action="cancel", **filters) -> Operation:
    return services.operation_create(
        workspace=workspace, action=action, filters=filters, actor="user:alice"
    )


def counts(operation_id) -> tuple[str, int, int, int, int]:
    op = Operation.objects.get(pk=operation_id)
    return (op.status, op.matched, op.succeeded, op.skipped, op.failed)


def operation_messages() -> list[str]:
    """The operation ids the broker holds messages for."""
    return [m for ms in queued_messages().values() for m in ms]


def test_an_unknown_action_is_refused(workspace):
    with pytest.raises(JobInputError) as refused:
        start(workspace, action="delete")
    assert "action" in refused.value.errors
    assert not Operation.objects.exists()


def test_a_job_whose_retry_is_refused_by_a_rule_counts_as_failed(workspace):
    job = job_in_state("failed", workspace=workspace)
    # Its type is no longer registered: the retry's checks refuse it.
    RunnerJob.objects.filter(pk=job.pk).update(type="retired-type")
    operation = start(workspace, "retry")
    services.operation_run(operation_id=operation.pk)
    assert counts(operation.pk) == ("completed", 1, 0, 0, 1)


def test_a_batch_that_breaks_goes_job_by_job_and_only_the_bad_job_fails(workspace, monkeypatch):
    jobs = [job_in_state("queued", workspace=workspace) for _ in range(2)]
    real_cancel = operations.job_cancel

    def batch_breaks(**kwargs):
        raise RuntimeError("a bug in the batch")

    def cancel_or_break(*, job_id, **kwargs):
        if job_id == min(j.pk for j in jobs):
            raise RuntimeError("a bug")
        return real_cancel(job_id=job_id, **kwargs)

    monkeypatch.setattr(operations, "jobs_cancel", batch_breaks)
    monkeypatch.setattr(operations, "job_cancel", cancel_or_break)
    operation = start(workspace)
    services.operation_run(operation_id=operation.pk)
    assert counts(operation.pk) == ("completed", 2, 1, 0, 1)
    good = max(jobs, key=lambda j: j.pk)
    event = JobEvent.objects.get(job=good, type="job.cancelled")
    assert event.payload == {"from": "queued", "operation": str(operation.pk)}


def test_a_retry_batch_with_a_refused_new_job_is_rolled_back_and_done_job_by_job(workspace):
    """A new job's unique key is held by a live job: the set-based batch fails after its
    statement ran; its savepoint is rolled back and the single retries count each job."""
    keyed = job_in_state("failed", workspace=workspace, unique_key="nightly")
    others = [job_in_state("failed", workspace=workspace) for _ in range(3)]
    live = job_in_state("queued", workspace=workspace, unique_key="nightly")
    operation = start(workspace, "retry", status=["failed"])
    services.operation_run(operation_id=operation.pk)
    assert counts(operation.pk) == ("completed", 4, 3, 0, 1)
    version = keyed.version
    keyed.refresh_from_db()
    assert (keyed.version, RunnerJob.objects.filter(retry_of=keyed).exists()) == (version, False)
    assert not JobEvent.objects.filter(job=keyed, type="job.retried").exists()
    for old in others:
        new = RunnerJob.objects.get(retry_of=old)
        assert JobEvent.objects.get(job=old, type="job.retried").payload == {
            "retry_job_id": str(new.pk),
            "operation": str(operation.pk),
        }
    assert RunnerJob.objects.filter(unique_key="nightly", status="queued").get() == live


def test_a_job_deleted_meanwhile_is_skipped(workspace):
    job = job_in_state("queued", workspace=workspace)
    operation = start(workspace)
    RunnerJob.objects.filter(pk=job.pk).delete()
    services.operation_run(operation_id=operation.pk)
    assert counts(operation.pk) == ("completed", 1, 0, 1, 0)


def test_a_run_stops_after_its_time_and_sends_itself_again(workspace, monkeypatch):
    monkeypatch.setattr(operations, "OPERATION_BATCH_SIZE", 1)
    for _ in range(3):
        job_in_state("queued", workspace=workspace)
    operation = start(workspace)
    celery_app.control.purge()
    result = services.operation_run(operation_id=operation.pk, seconds=0)
    assert result is not None
    assert (result.status, result.succeeded) == ("running", 1)
    assert operation_messages() == [repr([str(operation.pk)])]
    celery_app.control.purge()


def test_an_operation_that_no_longer_exists_is_ignored(workspace):
    assert services.operation_run(operation_id="5a1c0000-0000-4000-8000-000000000000") is None
    with pytest.raises(JobNotFoundError):
        services.operation_cancel(operation_id="5a1c0000-0000-4000-8000-000000000000")


def test_stalled_operations_are_sent_again(workspace):
    job_in_state("queued", workspace=workspace)
    stalled = start(workspace)
    job_in_state("queued", workspace=workspace)
    fresh = start(workspace)
    Operation.objects.filter(pk=stalled.pk).update(
        progressed_at=timezone.now() - timedelta(seconds=operations.OPERATION_STALL_SECONDS + 1)
    )
    celery_app.control.purge()
    assert services.operations_resume() == 1
    assert operation_messages() == [repr([str(stalled.pk)])] * operations.OPERATION_RUNNERS
    celery_app.control.purge()
    # With the broker down nothing is sent; the next resume tries again.
    with broker_url(DOWN_BROKER):
        assert services.operations_resume() == 0
    assert counts(stalled.pk)[0] == counts(fresh.pk)[0] == "running"


def test_a_staff_selection_across_workspaces_has_no_workspace(workspace):
    other = WorkspaceFactory()
    for ws in (workspace, other):
        job_in_state("queued", workspace=ws)
    staff = UserFactory(is_staff=True)
    operation = services.operation_start(
        jobs=RunnerJob.objects.all(),
        action="cancel",
        workspace=None,
        filters={"admin": "status=queued"},
        actor=f"staff:{staff.username}",
        created_by=staff,
    )
    services.operation_run(operation_id=operation.pk)
    assert counts(operation.pk) == ("completed", 2, 2, 0, 0)
    assert set(JobEvent.objects.filter(type="job.cancelled").values_list("actor", flat=True)) == {
        f"staff:{staff.username}"
    }


@pytest.mark.django_db(transaction=True)
def test_two_runs_of_one_operation_at_once_count_every_job_once(workspace, monkeypatch):
    monkeypatch.setattr(operations, "OPERATION_BATCH_SIZE", 5)
    for _ in range(40):
        job_in_state("queued", workspace=workspace)
    operation = start(workspace)
    barrier = threading.Barrier(2)

    def runner():
        try:
            barrier.wait()
            services.operation_run(operation_id=operation.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert counts(operation.pk) == ("completed", 40, 40, 0, 0)
    assert JobEvent.objects.filter(type="job.cancelled").count() == 40


def _run_by_worker(operation: Operation, jobs: int) -> tuple[float, set[int]]:
    """Poll an operation a real worker runs until it ends; its time and the done counts seen."""
    began = time.monotonic()
    seen = set()
    while counts(operation.pk)[0] == "running" and time.monotonic() - began < 120:
        seen.add(sum(counts(operation.pk)[2:]))
        time.sleep(0.005)
    return time.monotonic() - began, seen


@pytest.mark.worker
def test_a_worker_cancels_then_retries_two_thousand_jobs_and_the_counts_move(
    start_worker, workspace
):
    """A smaller count than the benchmark's 10 000 (docs/benchmarks.md): the real path, the
    after-commit publish to a real worker, set-based batches committing as they go."""
    user = UserFactory(username="alice")
    jobs = 2000
    for n in range(jobs):
        services.job_create(
            workspace=workspace,
            spec=services.JobSpec(type="agent-task", payload={"n": n}, tags=["bulk"]),
            actor="system",
        )
    start_worker(concurrency=2, beat=False)
    cancel = services.operation_create(
        workspace=workspace,
        action="cancel",
        filters={"tag": ["bulk"]},
        actor="user:alice",
        created_by=user,
    )
    cancel_seconds, seen = _run_by_worker(cancel, jobs)
    assert counts(cancel.pk) == ("completed", jobs, jobs, 0, 0)
    # Seen part way: the counts move while it runs, batch by batch.
    assert any(0 < s < jobs for s in seen), seen
    assert RunnerJob.objects.filter(status="cancelled").count() == jobs
    events = JobEvent.objects.filter(type="job.cancelled", payload__operation=str(cancel.pk))
    assert events.count() == jobs

    retry = services.operation_create(
        workspace=workspace,
        action="retry",
        filters={"tag": ["bulk"], "status": "cancelled"},
        actor="user:alice",
        created_by=user,
    )
    retry_seconds, _ = _run_by_worker(retry, jobs)
    assert counts(retry.pk) == ("completed", jobs, jobs, 0, 0)
    new_jobs = RunnerJob.objects.filter(retry_of__isnull=False)
    assert new_jobs.filter(status="queued", created_by_id=user.pk).count() == jobs
    retried = JobEvent.objects.filter(type="job.retried", payload__operation=str(retry.pk))
    assert retried.count() == jobs
    created = JobEvent.objects.filter(type="job.created", payload__operation=str(retry.pk))
    assert created.count() == jobs
    print(f"{jobs} jobs cancelled in {cancel_seconds:.1f} s, retried in {retry_seconds:.1f} s")
