"""prune_jobs: exactly the terminal jobs that ended before the cutoff, with their steps and
events, in batches; a dry run deletes nothing."""

import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from runner_jobs import services
from runner_jobs.models import JobEvent, JobStep, RunnerJob
from runner_jobs.services.locking import job_lock
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

AGE = timedelta(seconds=1)


def completed_with_a_step() -> RunnerJob:
    job = job_in_state("running", type="agent-task")
    step = services.step_start(job_id=job.pk, name="s", phase="execution", actor="w")
    services.step_finish(job_id=job.pk, step_id=step.pk, status="completed", actor="w")
    return services.job_complete(job_id=job.pk, result={}, actor="w")


@pytest.fixture
def history():
    """Old jobs in every state, a moment passes, then recent ones."""
    old = {
        "completed": completed_with_a_step(),
        "failed": job_in_state("failed", type="agent-task"),
        "cancelled": job_in_state("cancelled", type="agent-task"),
        "running": job_in_state("running", type="agent-task"),
        "queued": job_in_state("queued", type="agent-task"),
        "pending": services.job_create(
            workspace=WorkspaceFactory(), spec=services.JobSpec(type="echo", payload={}), actor="t"
        ).job,
    }
    time.sleep(AGE.total_seconds() + 0.1)
    recent = {
        "completed": job_in_state("completed", type="agent-task"),
        # A recent retry of an old failed job: kept, and its link to the pruned job is cleared.
        "retry": services.job_retry(job_id=old["failed"].pk, actor="u"),
    }
    return old, recent


def counts() -> tuple[int, int, int]:
    return RunnerJob.objects.count(), JobStep.objects.count(), JobEvent.objects.count()


def test_prune_deletes_exactly_old_terminal_jobs_with_steps_and_events_in_batches(history):
    old, recent = history
    doomed = [old["completed"].pk, old["failed"].pk, old["cancelled"].pk]
    doomed_events = JobEvent.objects.filter(job_id__in=doomed).count()
    jobs_before, steps_before, events_before = counts()

    result = services.jobs_prune(older_than=AGE, batch_size=2)

    assert result == services.PruneResult(
        jobs=3, steps=1, events=doomed_events, batches=2, dry_run=False
    )
    assert not RunnerJob.objects.filter(pk__in=doomed).exists()
    assert counts() == (jobs_before - 3, steps_before - 1, events_before - doomed_events)
    kept = {old[s].pk for s in ("running", "queued", "pending")} | {j.pk for j in recent.values()}
    assert set(RunnerJob.objects.values_list("pk", flat=True)) == kept
    retry = RunnerJob.objects.get(pk=recent["retry"].pk)
    assert retry.retry_of_id is None
    # Nothing left to do: a second run deletes nothing.
    assert services.jobs_prune(older_than=AGE) == services.PruneResult(
        jobs=0, steps=0, events=0, batches=0
    )


def test_dry_run_counts_the_same_rows_and_deletes_nothing(history):
    old, _ = history
    doomed = [old["completed"].pk, old["failed"].pk, old["cancelled"].pk]
    before = counts()
    result = services.jobs_prune(older_than=AGE, dry_run=True)
    assert result == services.PruneResult(
        jobs=3,
        steps=1,
        events=JobEvent.objects.filter(job_id__in=doomed).count(),
        batches=0,
        dry_run=True,
    )
    assert counts() == before


def test_prune_refuses_nonsense():
    with pytest.raises(ValueError):
        services.jobs_prune(older_than=timedelta(0))
    with pytest.raises(ValueError):
        services.jobs_prune(older_than=AGE, batch_size=0)


def test_command_reports_counts(history):
    old, _ = history
    doomed_events = JobEvent.objects.filter(
        job_id__in=[old["completed"].pk, old["failed"].pk, old["cancelled"].pk]
    ).count()
    out = StringIO()
    call_command("prune_jobs", "--older-than", "1s", "--dry-run", stdout=out)
    assert out.getvalue() == (
        f"Would delete 3 jobs, 1 steps, {doomed_events} events (dry run, nothing deleted).\n"
    )
    out = StringIO()
    call_command("prune_jobs", "--older-than", "1s", "--batch-size", "1", stdout=out)
    assert out.getvalue() == f"Deleted 3 jobs, 1 steps, {doomed_events} events in 3 batches.\n"


def test_command_keeps_recent_jobs_with_a_day_cutoff(history):
    before = counts()
    out = StringIO()
    call_command("prune_jobs", "--older-than", "30d", stdout=out)
    assert out.getvalue() == "Deleted 0 jobs, 0 steps, 0 events in 0 batches.\n"
    assert counts() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "30"], "--older-than must look like 30d"),
        (["--older-than", "0d"], "--older-than must look like 30d"),
        (["--older-than", "3y"], "--older-than must look like 30d"),
        (["--older-than", "1d", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_command_rejects_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("prune_jobs", *args)


@pytest.mark.django_db(transaction=True)
def test_a_job_locked_by_another_transaction_is_left_for_the_next_run():
    locked = job_in_state("failed", type="agent-task")
    other = job_in_state("cancelled", type="agent-task")
    time.sleep(AGE.total_seconds() + 0.1)
    holding, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        try:
            with transaction.atomic():
                job_lock(locked.pk)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert holding.wait(10)
    try:
        result = services.jobs_prune(older_than=AGE)
    finally:
        release.set()
        holder.join()
    assert (result.jobs, result.batches) == (1, 1)
    assert list(RunnerJob.objects.values_list("pk", flat=True)) == [locked.pk]
    assert not RunnerJob.objects.filter(pk=other.pk).exists()
    assert services.jobs_prune(older_than=AGE).jobs == 1


def test_daily_task_prunes_with_the_retention_setting(history, settings):
    from runner_jobs.tasks import prune_jobs_task

    assert settings.CELERY_BEAT_SCHEDULE["prune-jobs"]["task"] == prune_jobs_task.name
    before = counts()
    settings.RUNNER_RETENTION_DAYS = 30
    assert prune_jobs_task() == {"jobs": 0, "steps": 0, "events": 0}
    assert counts() == before
