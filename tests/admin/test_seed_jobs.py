"""The seeding command used for scale measurements."""

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, F

from runner_jobs.models import JobEvent, RunnerJob

pytestmark = pytest.mark.django_db


def test_seed_jobs_writes_consistent_jobs_and_events():
    call_command("seed_jobs", jobs=300, events_per_job=4, workspaces=3, stdout=None)
    assert RunnerJob.objects.count() == 300
    assert JobEvent.objects.count() == 1200
    assert RunnerJob.objects.values("workspace").distinct().count() == 3
    # As if written by the services: version = number of events, and the last event says how
    # the job ended.
    counted = RunnerJob.objects.annotate(n=Count("events"))
    assert not counted.exclude(n=F("version")).exists()
    for job in RunnerJob.objects.filter(status__in=["completed", "failed", "cancelled"])[:20]:
        last = JobEvent.objects.filter(job=job).order_by("id").last()
        assert last.type == f"job.{job.status}"
        assert job.completed_at is not None
    assert set(RunnerJob.objects.values_list("status", flat=True)) >= {"completed", "failed"}
    assert not RunnerJob.objects.filter(status="completed").exclude(progress=100).exists()


def test_seed_jobs_refuses_a_database_with_jobs_unless_appending():
    call_command("seed_jobs", jobs=10, events_per_job=1, workspaces=1)
    with pytest.raises(CommandError, match="--append"):
        call_command("seed_jobs", jobs=10, events_per_job=1, workspaces=1)
    call_command("seed_jobs", jobs=10, events_per_job=1, workspaces=1, append=True)
    assert RunnerJob.objects.count() == 20


@pytest.mark.parametrize("events_per_job", [0, 99])
def test_seed_jobs_checks_events_per_job(events_per_job):
    with pytest.raises(CommandError, match="--events-per-job"):
        call_command("seed_jobs", jobs=1, events_per_job=events_per_job)
    assert not RunnerJob.objects.exists()


def test_seeded_jobs_carry_tags_and_metadata_of_known_frequencies():
    call_command("seed_jobs", jobs=2000, events_per_job=1, workspaces=1, stdout=None)
    assert RunnerJob.objects.filter(tags__contains=["env:prod"]).count() == 1000
    assert RunnerJob.objects.filter(tags__contains=["team-7"]).count() == 100
    assert RunnerJob.objects.filter(tags__contains=["customer-42"]).count() == 2
    assert RunnerJob.objects.filter(metadata__contains={"customer": "42"}).count() == 2
    job = RunnerJob.objects.filter(tags__contains=["customer-42"]).first()
    assert job.metadata["customer"] == "42"
    assert job.metadata["region"] in {"eu", "us", "ap"}


def test_seed_jobs_can_make_one_status_and_type_in_named_workspaces():
    call_command(
        "seed_jobs",
        jobs=50,
        events_per_job=1,
        workspaces=2,
        workspace_prefix="bulk",
        status="queued",
        job_type="agent-task",
        stdout=None,
    )
    assert set(RunnerJob.objects.values_list("status", "type").distinct()) == {
        ("queued", "agent-task")
    }
    assert set(RunnerJob.objects.values_list("workspace__slug", flat=True)) == {"bulk-0", "bulk-1"}
