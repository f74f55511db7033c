"""How deliveries run: one at a time per endpoint, from an outbox that a broker outage cannot
empty, on a queue and workers of their own so a tenant's slow endpoints never delay another
tenant's jobs. Real Redis, real PostgreSQL, real worker processes; no mocks."""

import ast
import json
import threading
import time
from datetime import datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from job_events import herald, listeners
from job_events.models import PendingDelivery, WebhookDelivery
from job_events.tasks import webhook_outbox_sweep_task
from runner_jobs import services
from runner_jobs.models import JobEvent, JobStatus, RunnerJob
from runner_jobs.services import JobSpec, events
from tests.events.webhooks import endpoint_for, pending_for
from tests.execution.conftest import broker_url, purge_queues, wait_for
from tests.factories import WorkspaceFactory, job_in_state

DOWN_BROKER = "redis://127.0.0.1:6393/0"  # nothing listens there
ALLOW_LOCAL = {"RUNNER_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}


@pytest.fixture(autouse=True)
def empty_queues():
    purge_queues()
    yield
    purge_queues()


def webhook_messages() -> list[int]:
    """The pending-delivery ids waiting in the ``webhooks`` queue."""
    with celery_app.connection_for_write() as conn:
        raw = conn.default_channel.client.lrange(django_settings.WEBHOOK_QUEUE, 0, -1)
    return [ast.literal_eval(json.loads(m)["headers"]["argsrepr"])[0] for m in raw]


# --- One attempt at a time per endpoint -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_gets_one_delivery_at_a_time_and_a_busy_one_waits_elsewhere(receiver):
    receiver.delay = 0.8
    workspace = WorkspaceFactory(slug="acme")
    endpoint_for(workspace, receiver.url + "/a")
    job = job_in_state("pending", workspace=workspace)  # job.created, job.queued
    endpoint_for(workspace, receiver.url + "/b")
    services.event_append(job_id=job.pk, type="test.last", actor="w")
    # Recorded as the writers did: a's deliveries of the first two events, and b's of the last.
    a1, a2 = PendingDelivery.objects.filter(endpoint__url__endswith="/a").order_by("pk")[:2]
    (b1,) = PendingDelivery.objects.filter(endpoint__url__endswith="/b", event__type="test.last")
    PendingDelivery.objects.exclude(pk__in=[a1.pk, a2.pk, b1.pk]).delete()
    results: dict[int, float | None] = {}
    barrier = threading.Barrier(3)

    def deliver(pending_id: int) -> None:
        barrier.wait()
        try:
            results[pending_id] = herald.webhook_deliver(pending_id=pending_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(p.pk,)) for p in (a1, a2, b1)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - started

    assert receiver.most_in_flight == {"/hook/a": 1, "/hook/b": 1}
    busy = [p for p in (a1.pk, a2.pk) if results[p] is not None]
    assert len(busy) == 1 and 1 <= results[busy[0]] <= 2  # retried later, worker not held
    assert results[b1.pk] is None
    assert elapsed < 1.6  # a and b at once; the busy delivery did not wait for a
    assert WebhookDelivery.objects.filter(succeeded=True).count() == 2
    assert list(PendingDelivery.objects.values_list("pk", flat=True)) == busy
    assert herald.webhook_deliver(pending_id=busy[0]) is None  # a is free again
    assert WebhookDelivery.objects.filter(succeeded=True).count() == 3
    assert not PendingDelivery.objects.exists()


# --- The outbox -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_deliveries_are_written_with_the_event_and_sent_after_commit(
    receiver, workspace, django_capture_on_commit_callbacks
):
    endpoint = endpoint_for(workspace, receiver.url, ["job.created"])
    with django_capture_on_commit_callbacks(execute=True):
        job = services.job_create(
            workspace=workspace, spec=JobSpec(type="agent-task", payload={}), actor="u"
        ).job
        (pending,) = PendingDelivery.objects.all()  # in the event's transaction
        assert webhook_messages() == []
    assert (pending.endpoint, pending.event.type, pending.event.job) == (
        endpoint,
        "job.created",
        job,
    )
    assert webhook_messages() == [pending.pk]
    assert pending.resend_at >= timezone.now() + timedelta(seconds=100)


@pytest.mark.django_db
def test_the_writer_runs_each_hook_once_and_writes_events_without_any(
    receiver, workspace, monkeypatch
):
    events.event_recorder_register(listeners.events_recorded)  # registered by the app already
    events.event_listener_register(listeners.events_committed)
    assert events._recorders.count(listeners.events_recorded) == 1
    assert events._listeners.count(listeners.events_committed) == 1
    job = job_in_state("running", workspace=workspace)
    endpoint_for(workspace, receiver.url)
    monkeypatch.setattr(events, "_recorders", [])
    monkeypatch.setattr(events, "_listeners", [])
    services.event_append(job_id=job.pk, type="test.unheard", actor="w")
    assert JobEvent.objects.filter(job=job, type="test.unheard").exists()
    assert not PendingDelivery.objects.exists()  # no delivery app: nothing recorded
    monkeypatch.setattr(events, "_recorders", [listeners.events_recorded])
    events.events_committed_on_commit([], workspace_id=workspace.pk)  # a write without events
    assert not PendingDelivery.objects.exists()


@pytest.mark.django_db
def test_a_broker_outage_at_commit_loses_no_delivery(
    receiver, workspace, django_capture_on_commit_callbacks, monkeypatch
):
    endpoint_for(workspace, receiver.url, ["job.*"])
    with broker_url(DOWN_BROKER), django_capture_on_commit_callbacks(execute=True):
        services.job_create(
            workspace=workspace, spec=JobSpec(type="agent-task", payload={}), actor="u"
        )
    pending = list(PendingDelivery.objects.order_by("pk"))
    assert [p.event.type for p in pending] == ["job.created", "job.queued"]
    assert all(p.resend_at <= timezone.now() for p in pending)  # for the very next sweep
    assert webhook_messages() == []

    with broker_url(DOWN_BROKER):
        assert herald.webhook_outbox_sweep() == 0  # still down: nothing sent, nothing changed
    assert all(p.resend_at <= timezone.now() for p in PendingDelivery.objects.all())

    monkeypatch.setattr(herald, "OUTBOX_BATCH_SIZE", 1)  # one row per transaction
    assert webhook_outbox_sweep_task.apply().get() == 2
    assert sorted(webhook_messages()) == [p.pk for p in pending]
    assert (
        str(pending[0])
        == f"event {pending[0].event_id} -> endpoint {pending[0].endpoint_id} (pending)"
    )
    later = timezone.now() + timedelta(seconds=django_settings.RUNNER_REDISPATCH_AFTER_SECONDS - 5)
    assert all(p.resend_at > later for p in PendingDelivery.objects.all())
    assert herald.webhook_outbox_sweep() == 0  # handed over: not sent twice


@pytest.mark.django_db
def test_a_lost_message_is_sent_again_with_the_rest_of_its_countdown(receiver, workspace):
    event = JobEvent.objects.get(job=job_in_state("pending", workspace=workspace))
    endpoint_for(workspace, receiver.url)
    now, (pending_id,) = timezone.now(), pending_for(event)
    # Its retry is due in a minute, and its message was lost (a Redis restart).
    PendingDelivery.objects.update(due_at=now + timedelta(seconds=60), resend_at=now)
    assert herald.webhook_outbox_sweep() == 1
    with celery_app.connection_for_write() as conn:
        (raw,) = conn.default_channel.client.lrange(django_settings.WEBHOOK_QUEUE, 0, -1)
    eta = json.loads(raw)["headers"]["eta"]
    assert 50 < (datetime.fromisoformat(eta) - now).total_seconds() <= 61
    pending = PendingDelivery.objects.get(pk=pending_id)
    assert pending.resend_at == pending.due_at + timedelta(
        seconds=django_settings.RUNNER_REDISPATCH_AFTER_SECONDS
    )


@pytest.mark.django_db(transaction=True)
def test_the_beat_sweep_delivers_what_a_broker_outage_kept_back(receiver, start_worker):
    workspace = WorkspaceFactory(slug="acme")
    endpoint_for(workspace, receiver.url, ["job.created"])
    with broker_url(DOWN_BROKER):
        job = services.job_create(
            workspace=workspace, spec=JobSpec(type="echo", payload={}), actor="u"
        ).job
    assert PendingDelivery.objects.count() == 1 and receiver.requests == []

    start_worker(**ALLOW_LOCAL)  # its beat runs the outbox sweep every second

    wait_for(lambda: len(receiver.requests) == 1, timeout=30)
    body = json.loads(receiver.requests[0].body)
    assert (body["event"]["type"], body["job"]["id"]) == ("job.created", str(job.pk))
    wait_for(lambda: not PendingDelivery.objects.exists(), timeout=10)
    assert WebhookDelivery.objects.get().succeeded
    time.sleep(1.5)  # a further sweep sends nothing again
    assert len(receiver.requests) == 1


# --- Isolation from execution -----------------------------------------------------------------


def start_latency(workspace_slug: str) -> float:
    """Create an echo job and return the seconds from its creation to its start."""
    workspace = WorkspaceFactory(slug=workspace_slug)
    job = services.job_create(
        workspace=workspace, spec=JobSpec(type="echo", payload={}), actor="u"
    ).job
    wait_for(
        lambda: RunnerJob.objects.filter(pk=job.pk, status=JobStatus.COMPLETED).exists(),
        timeout=30,
    )
    job.refresh_from_db()
    assert job.started_at is not None
    return (job.started_at - job.created_at).total_seconds()


@pytest.mark.django_db(transaction=True)
def test_a_tenants_slow_endpoints_do_not_delay_another_tenants_jobs(receiver, start_worker):
    env = {**ALLOW_LOCAL, "RUNNER_WEBHOOK_TIMEOUT_SECONDS": "1"}
    # As in the Procfile: one worker for jobs, one for webhook deliveries.
    start_worker(queues="celery", concurrency=2, **env)
    start_worker(queues=django_settings.WEBHOOK_QUEUE, concurrency=2, beat=False, **env)
    baseline = start_latency("calm")

    receiver.delay = 3  # every answer outlasts the delivery timeout
    slowpoke = WorkspaceFactory(slug="slowpoke")
    for n in range(4):
        endpoint_for(slowpoke, f"{receiver.url}/{n}")
    jobs = [
        services.job_create(
            workspace=slowpoke, spec=JobSpec(type="echo", payload={}), actor="u"
        ).job
        for _ in range(6)
    ]
    wait_for(
        lambda: (
            RunnerJob.objects.filter(pk__in=[j.pk for j in jobs], status="completed").count()
            == len(jobs)
        ),
        timeout=30,
    )
    # Their deliveries are stuck behind the slow endpoints: dozens wait.
    assert PendingDelivery.objects.filter(endpoint__workspace_id=slowpoke.pk).count() > 40

    loaded = start_latency("calm-too")

    assert PendingDelivery.objects.filter(endpoint__workspace_id=slowpoke.pk).count() > 20
    assert max(receiver.most_in_flight.values()) == 1  # one delivery at a time per endpoint
    assert loaded < baseline + 1.0, (baseline, loaded)
