"""Worker heartbeats from real Celery worker processes, coordinator claims, the staff API, the
admin page and the metric."""

import os
import signal

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from runner_jobs import services
from runner_jobs.models import Worker
from runner_jobs.workers import worker_counts, workers_list
from tests.execution.conftest import TEST_LEASE_SECONDS, wait_for
from tests.factories import UserFactory, WorkspaceFactory

URL = "/api/v1/workers/"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(transactional_db):
    client = APIClient()
    client.force_authenticate(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def listed(staff) -> dict[str, dict]:
    response = staff.get(URL)
    assert response.status_code == 200
    return {w["name"]: w for w in response.json()}


@pytest.mark.worker
def test_a_real_worker_is_listed_alive_with_its_running_job_then_not_alive_once_killed(
    start_worker, staff, settings
):
    # The service and its workers share one lease setting.
    settings.RUNNER_JOB_LEASE_SECONDS = TEST_LEASE_SECONDS
    worker = start_worker(beat=False)
    name = wait_for(
        lambda: Worker.objects.filter(kind="celery").values_list("name", flat=True).first(),
        timeout=20,
    )
    row = listed(staff)[name]
    assert row["kind"] == "celery" and row["alive"] is True
    assert row["pid"] == worker.process.pid
    assert row["hostname"] and row["running"] == []
    assert row["started_at"] <= row["last_seen_at"]

    job = services.job_create(
        workspace=WorkspaceFactory(slug="acme"),
        spec=services.JobSpec(type="sleep", payload={"seconds": 60}),
        actor="test",
    ).job
    wait_for(lambda: listed(staff)[name]["running"] == [str(job.pk)], timeout=20)
    # Heartbeats keep coming every few seconds.
    seen = Worker.objects.get(name=name).last_seen_at
    wait_for(lambda: Worker.objects.get(name=name).last_seen_at > seen, timeout=10)

    worker.kill()
    killed_at = timezone.now()
    wait_for(lambda: listed(staff)[name]["alive"] is False, timeout=TEST_LEASE_SECONDS + 5)
    assert (timezone.now() - killed_at).total_seconds() <= TEST_LEASE_SECONDS + 5
    assert worker_counts()[("celery", False)] == 1


@pytest.mark.worker
def test_a_worker_that_shuts_down_cleanly_is_not_alive_at_once(start_worker, staff):
    worker = start_worker(beat=False)
    name = wait_for(
        lambda: Worker.objects.filter(kind="celery").values_list("name", flat=True).first(),
        timeout=20,
    )
    os.kill(worker.process.pid, signal.SIGTERM)
    worker.process.wait(30)
    row = Worker.objects.get(name=name)
    assert row.stopped_at is not None
    assert listed(staff)[name]["alive"] is False


def test_a_coordinator_claim_is_its_heartbeat(staff):
    from coordinator.models import CoordinatorKey

    _, key = CoordinatorKey.objects.create_key(name="agents")
    client = Client()
    response = client.post(
        "/api/v1/coordinator/jobs/claim/",
        {"types": ["agent-task"], "limit": 1},
        content_type="application/json",
        headers={"X-API-Key": key},
    )
    assert response.status_code == 200, response.content
    row = listed(staff)["agents"]
    assert row["kind"] == "coordinator" and row["alive"] is True
    assert row["running"] == [] and row["pid"] is None


def test_only_staff_see_workers(transactional_db):
    services.worker_seen(kind="celery", name="w@host", hostname="host", pid=1, started=True)
    client = APIClient()
    assert client.get(URL).status_code == 401
    client.force_authenticate(UserFactory(username="alice"))
    response = client.get(URL)
    assert response.status_code == 403
    assert set(response.json()) == {"detail", "code"}


def test_a_restart_under_the_same_name_resets_started_at_and_old_rows_are_forgotten(staff):
    services.worker_seen(kind="celery", name="w@host", pid=1, started=True)
    Worker.objects.update(
        started_at=timezone.now() - timezone.timedelta(days=3),
        last_seen_at=timezone.now() - timezone.timedelta(days=2),
    )
    services.worker_seen(kind="celery", name="old@gone", pid=2, started=True)
    Worker.objects.filter(name="old@gone").update(
        last_seen_at=timezone.now() - timezone.timedelta(days=2)
    )
    services.worker_seen(kind="celery", name="w@host", pid=3, started=True)
    assert list(Worker.objects.values_list("name", "pid")) == [("w@host", 3)]
    assert Worker.objects.get().started_at > timezone.now() - timezone.timedelta(minutes=1)
    services.worker_stopped(kind="celery", name="w@host")
    assert [s.alive for s in workers_list()] == [False]


def test_the_metric_and_the_admin_page(staff, admin_client):
    services.worker_seen(kind="celery", name="w@host", hostname="host", pid=7, started=True)
    services.worker_seen(kind="coordinator", name="agents")
    Worker.objects.filter(name="agents").update(
        last_seen_at=timezone.now() - timezone.timedelta(hours=1)
    )
    metrics = Client().get("/metrics").content.decode()
    assert 'runner_jobs_workers{alive="true",kind="celery"} 1.0' in metrics
    assert 'runner_jobs_workers{alive="false",kind="coordinator"} 1.0' in metrics
    assert 'runner_jobs_workers{alive="false",kind="celery"} 0.0' in metrics
    page = admin_client.get("/admin/runner_jobs/worker/")
    assert page.status_code == 200
    assert b"w@host" in page.content and b"agents" in page.content
    schedules = admin_client.get("/admin/runner_jobs/schedule/")
    assert schedules.status_code == 200
