"""Schedules fired by real Celery beat processes (two at once) and workers, on the test
database: one job per due time, within seconds of it, and one catch-up after downtime."""

from datetime import timedelta

import pytest
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import RunnerJob, Schedule
from runner_jobs.services.schedules import Timing, schedule_create
from tests.execution.conftest import wait_for
from tests.factories import WorkspaceFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

INTERVAL = 10
# The beat's tick in these tests: a due time is fired within about this (plus a task's trip).
TICK = "0.5"
LATENESS_ALLOWED = timedelta(seconds=4)


def test_two_beat_processes_make_one_job_per_due_time_and_one_catch_up(start_worker):
    workers = [start_worker(RUNNER_SCHEDULE_TICK_SECONDS=TICK) for _ in range(2)]
    schedule = schedule_create(
        workspace=WorkspaceFactory(slug="acme"),
        name="tick",
        timing=Timing(interval_seconds=INTERVAL),
        spec=services.JobSpec(type="echo", payload={"from": "schedule"}),
    )
    # Downtime: the schedule fell due an hour ago, and 359 times since.
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now() - timedelta(hours=1))
    jobs = RunnerJob.objects.filter(schedule=schedule).order_by("created_at")

    wait_for(lambda: jobs.exists(), timeout=20)
    after_catch_up = Schedule.objects.get(pk=schedule.pk).next_run_at
    assert timezone.now() - LATENESS_ALLOWED < after_catch_up
    assert jobs.count() == 1

    wait_for(lambda: jobs.count() >= 4, timeout=60)
    for worker in workers:
        worker.kill()
    last_due = Schedule.objects.get(pk=schedule.pk).next_run_at - timedelta(seconds=INTERVAL)
    due_times = [
        after_catch_up + timedelta(seconds=INTERVAL * k)
        for k in range(int((last_due - after_catch_up).total_seconds()) // INTERVAL + 1)
    ]
    made = list(jobs)
    # Exactly one job for the missed runs, then exactly one per due time, each soon after it.
    assert len(made) == 1 + len(due_times)
    lateness = [job.created_at - due for job, due in zip(made[1:], due_times, strict=True)]
    assert all(timedelta(0) <= late <= LATENESS_ALLOWED for late in lateness), lateness
    print("jobs made after their due time (s):", [round(x.total_seconds(), 2) for x in lateness])
    assert all(job.payload == {"from": "schedule"} for job in made)
    # Both beats were sending the tick, and both workers fired schedules.
    for worker in workers:
        assert "runner_jobs.fire_schedules" in worker.output()
    wait_for(lambda: jobs.filter(status="completed").count() >= 1, timeout=1)
