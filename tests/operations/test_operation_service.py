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


def test_an_unexpected_error_counts_as_failed_and_the_batch_goes_on(workspace, monkeypatch):
    jobs = [job_in_state("queued", workspace=workspace) for _ in range(2)]
    real_cancel = operations.job_cancel

    def cancel_or_break(*, job_id, **kwargs):
        if job_id == min(j.pk for j in jobs):
            raise RuntimeError("a bug")
        return real_cancel(job_id=job_id, **kwargs)

    monkeypatch.setattr(operations, "job_cancel", cancel_or_break)
    operation = start(workspace)
    services.operation_run(operation_id=operation.pk)
    assert counts(operation.pk) == ("completed", 2, 1, 0, 1)


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


@pytest.mark.worker
def test_a_worker_cancels_a_thousand_jobs_and_the_counts_move(start_worker, workspace):
    """A smaller count than the benchmark's 10 000 (docs/benchmarks.md): the real path, the API's
    after-commit publish to a real worker, batches committing as they go."""
    user = UserFactory(username="alice")
    jobs = 1000
    for n in range(jobs):
        services.job_create(
            workspace=workspace,
            spec=services.JobSpec(type="agent-task", payload={"n": n}, tags=["bulk"]),
            actor="system",
        )
    start_worker(concurrency=2, beat=False)
    began = time.monotonic()
    operation = services.operation_create(
        workspace=workspace,
        action="cancel",
        filters={"tag": ["bulk"]},
        actor="user:alice",
        created_by=user,
    )
    seen = set()
    while counts(operation.pk)[0] == "running" and time.monotonic() - began < 120:
        seen.add(counts(operation.pk)[2])
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    assert counts(operation.pk) == ("completed", jobs, jobs, 0, 0)
    # Seen part way: the counts move while it runs, batch by batch.
    assert any(0 < s < jobs for s in seen), seen
    assert RunnerJob.objects.filter(status="cancelled").count() == jobs
    events = JobEvent.objects.filter(type="job.cancelled", payload__operation=str(operation.pk))
    assert events.count() == jobs
    print(f"{jobs} jobs cancelled by one operation in {elapsed:.1f} s")
