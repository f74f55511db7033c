"""Schedules in the service layer: timing, firing exactly once, overlap, pause, catch-up."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections
from django.utils import timezone

from runner_jobs import services
from runner_jobs.errors import JobInputError
from runner_jobs.models import RunnerJob, Schedule
from runner_jobs.services.schedules import (
    FireReport,
    ScheduleNotFoundError,
    Timing,
    schedule_create,
    schedule_delete,
    schedule_spec,
    schedule_trigger,
    schedule_update,
    schedules_fire,
)
from tests.factories import WorkspaceFactory

SPEC = services.JobSpec(type="echo", payload={"hello": "world"}, priority=7)


@pytest.fixture
def every_minute(db):
    return schedule_create(
        workspace=WorkspaceFactory(slug="acme"),
        name="tick",
        timing=Timing(interval_seconds=60),
        spec=SPEC,
    )


def make_due(schedule: Schedule, at: datetime) -> Schedule:
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=at)
    schedule.refresh_from_db()
    return schedule


@pytest.mark.parametrize(
    ("timing", "fields"),
    [
        (Timing(cron="61 * * * *"), {"cron"}),
        (Timing(cron="0 * * * * *"), {"cron"}),
        (Timing(cron="@hourly"), {"cron"}),
        (Timing(cron="* * *"), {"cron"}),
        (Timing(cron="0 25 * * *"), {"cron"}),
        (Timing(interval_seconds=9), {"interval_seconds"}),
        (Timing(interval_seconds=400 * 86400), {"interval_seconds"}),
        (Timing(), {"non_field_errors"}),
        (Timing(cron="* * * * *", interval_seconds=60), {"non_field_errors"}),
        (Timing(cron="* * * * *", timezone="Mars/Olympus"), {"timezone"}),
        (Timing(cron="* * * * *", timezone="../../etc/passwd"), {"timezone"}),
        (Timing(cron="* * * * *", timezone=""), {"timezone"}),
    ],
)
def test_bad_timings_are_field_errors(timing, fields):
    assert set(timing.errors()) == fields


def test_good_timings_have_no_errors():
    assert Timing(cron="*/5 9-17 * * 1-5", timezone="Europe/Paris").errors() == {}
    assert Timing(interval_seconds=10).errors() == {}


def test_cron_is_read_in_the_schedules_timezone_across_daylight_saving():
    nine_in_paris = Timing(cron="0 9 * * *", timezone="Europe/Paris")
    winter = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    assert nine_in_paris.next_after(winter) == datetime(2026, 1, 16, 8, 0, tzinfo=UTC)
    assert nine_in_paris.next_after(summer) == datetime(2026, 7, 16, 7, 0, tzinfo=UTC)


def test_an_interval_counts_from_the_due_time_and_skips_what_was_missed():
    every_ten = Timing(interval_seconds=10)
    now = datetime(2026, 1, 1, 12, 0, 3, tzinfo=UTC)
    assert every_ten.next_after(now) == now + timedelta(seconds=10)
    due = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert every_ten.next_after(now, previous=due) == due + timedelta(seconds=10)
    an_hour_late = due + timedelta(hours=1, seconds=3)
    assert every_ten.next_after(an_hour_late, previous=due) == due + timedelta(hours=1, seconds=10)


def test_create_sets_the_first_due_time_and_stores_the_spec(every_minute):
    assert every_minute.next_run_at > timezone.now() + timedelta(seconds=55)
    assert every_minute.last_run_at is None
    assert schedule_spec(every_minute) == SPEC


def test_create_refuses_bad_input_and_writes_nothing(db):
    workspace = WorkspaceFactory(slug="acme")
    with pytest.raises(JobInputError) as bad_timing:
        schedule_create(workspace=workspace, name="x", timing=Timing(cron="61 * * * *"), spec=SPEC)
    assert set(bad_timing.value.errors) == {"cron"}
    with pytest.raises(JobInputError) as bad_type:
        schedule_create(
            workspace=workspace,
            name="x",
            timing=Timing(interval_seconds=60),
            spec=services.JobSpec(type="nope", payload={}),
        )
    assert set(bad_type.value.errors) == {"type"}
    schedule_create(workspace=workspace, name="x", timing=Timing(interval_seconds=60), spec=SPEC)
    with pytest.raises(JobInputError) as duplicate:
        schedule_create(
            workspace=workspace, name="x", timing=Timing(interval_seconds=60), spec=SPEC
        )
    assert set(duplicate.value.errors) == {"name"}
    assert Schedule.objects.count() == 1


def test_a_due_schedule_makes_one_job_named_after_it(every_minute):
    due = timezone.now() - timedelta(seconds=1)
    make_due(every_minute, due)
    report = schedules_fire()
    assert (report.fired, report.overlapped, report.lost, report.failed) == (1, 0, 0, 0)
    job = RunnerJob.objects.get()
    assert job.schedule_id == every_minute.pk
    assert (job.type, job.payload, job.priority) == ("echo", {"hello": "world"}, 7)
    assert job.events.get(type="job.created").actor == f"schedule:{every_minute.pk}"
    every_minute.refresh_from_db()
    assert every_minute.next_run_at == due + timedelta(seconds=60)
    assert every_minute.last_run_at is not None
    assert schedules_fire().fired == 0
    assert RunnerJob.objects.count() == 1


def test_after_downtime_one_missed_run_is_made_up(every_minute):
    make_due(every_minute, timezone.now() - timedelta(hours=5))
    assert schedules_fire().fired == 1
    assert schedules_fire().fired == 0
    every_minute.refresh_from_db()
    assert timezone.now() < every_minute.next_run_at <= timezone.now() + timedelta(seconds=60)
    assert RunnerJob.objects.count() == 1


def test_a_paused_schedule_does_not_fire_and_resuming_does_not_catch_up(every_minute):
    schedule_update(schedule_id=every_minute.pk, paused=True)
    make_due(every_minute, timezone.now() - timedelta(hours=1))
    assert schedules_fire().fired == 0
    resumed = schedule_update(schedule_id=every_minute.pk, paused=False)
    assert resumed.next_run_at > timezone.now()
    assert schedules_fire().fired == 0
    assert not RunnerJob.objects.exists()


def test_overlap_skip_makes_no_job_while_the_previous_one_is_live(every_minute):
    schedule_update(schedule_id=every_minute.pk, overlap="skip")
    make_due(every_minute, timezone.now() - timedelta(seconds=1))
    assert schedules_fire().fired == 1
    first = RunnerJob.objects.get()
    make_due(every_minute, timezone.now() - timedelta(seconds=1))
    report = schedules_fire()
    assert (report.fired, report.overlapped) == (0, 1)
    assert RunnerJob.objects.count() == 1
    services.job_cancel(job_id=first.pk, actor="test")
    make_due(every_minute, timezone.now() - timedelta(seconds=1))
    assert schedules_fire().fired == 1
    assert RunnerJob.objects.count() == 2


def test_overlap_allow_makes_a_job_even_while_the_previous_one_is_live(every_minute):
    for _ in range(2):
        make_due(every_minute, timezone.now() - timedelta(seconds=1))
        assert schedules_fire().fired == 1
    assert RunnerJob.objects.filter(status__in=["pending", "queued"]).count() == 2


def test_a_job_that_cannot_be_made_spends_its_due_time(every_minute):
    Schedule.objects.filter(pk=every_minute.pk).update(job={"type": "gone", "payload": {}})
    due = timezone.now() - timedelta(seconds=1)
    make_due(every_minute, due)
    assert schedules_fire().failed == 1
    every_minute.refresh_from_db()
    assert every_minute.next_run_at == due + timedelta(seconds=60)
    assert not RunnerJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_firings_of_one_due_time_make_one_job():
    schedule = schedule_create(
        workspace=WorkspaceFactory(slug="acme"),
        name="tick",
        timing=Timing(interval_seconds=60),
        spec=SPEC,
    )
    now = timezone.now()
    for round_ in range(5):
        make_due(schedule, now - timedelta(seconds=1) + timedelta(minutes=round_))
        barrier = threading.Barrier(4)
        reports: list[FireReport] = []

        def fire(at=now + timedelta(minutes=round_), barrier=barrier, reports=reports):
            barrier.wait()
            try:
                reports.append(schedules_fire(now=at))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=fire) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(r.fired for r in reports) == 1
    assert RunnerJob.objects.filter(schedule=schedule).count() == 5


def test_trigger_runs_now_whatever_the_pause_and_keeps_the_due_time(every_minute):
    paused = schedule_update(schedule_id=every_minute.pk, paused=True)
    job = schedule_trigger(schedule_id=every_minute.pk)
    assert job.schedule_id == every_minute.pk
    every_minute.refresh_from_db()
    assert every_minute.next_run_at == paused.next_run_at
    assert every_minute.last_run_at is not None


def test_update_changes_timing_and_spec_and_refuses_bad_input(every_minute):
    cron = schedule_update(
        schedule_id=every_minute.pk,
        timing=Timing(cron="0 0 1 1 *", timezone="Asia/Tokyo"),
        spec=services.JobSpec(type="sleep", payload={"seconds": 1}),
        name="new year",
    )
    assert cron.interval_seconds is None and cron.name == "new year"
    assert cron.next_run_at.astimezone(timezone.get_default_timezone()).year >= 2026
    assert schedule_spec(cron).type == "sleep"
    with pytest.raises(JobInputError):
        schedule_update(schedule_id=every_minute.pk, timing=Timing(interval_seconds=5))
    with pytest.raises(JobInputError):
        schedule_update(schedule_id=every_minute.pk, spec=services.JobSpec(type="nope", payload={}))
    schedule_create(
        workspace=every_minute.workspace,
        name="other",
        timing=Timing(interval_seconds=60),
        spec=SPEC,
    )
    with pytest.raises(JobInputError):
        schedule_update(schedule_id=every_minute.pk, name="other")
    every_minute.refresh_from_db()
    assert every_minute.name == "new year"
    with pytest.raises(ScheduleNotFoundError):
        schedule_update(schedule_id="00000000-0000-0000-0000-000000000000", paused=True)


def test_delete_keeps_the_jobs(every_minute):
    job = schedule_trigger(schedule_id=every_minute.pk)
    schedule_delete(schedule_id=every_minute.pk)
    job.refresh_from_db()
    assert job.schedule_id is None
    assert not Schedule.objects.exists()


def test_the_admin_actions_go_through_the_services(every_minute, admin_client):
    url = "/admin/runner_jobs/schedule/"
    for action in ("pause", "run_now", "resume"):
        response = admin_client.post(
            url, {"action": action, "_selected_action": [str(every_minute.pk)]}, follow=True
        )
        assert response.status_code == 200
        every_minute.refresh_from_db()
        if action == "pause":
            assert every_minute.paused
    assert not every_minute.paused
    job = RunnerJob.objects.get()
    assert job.schedule_id == every_minute.pk
    assert admin_client.get(url).status_code == 200
