"""Webhooks: the API and admin for endpoints, and signed deliveries to a real local HTTP server
(retries, backoff, the attempt log). No HTTP or database mocks."""

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from job_events import herald
from job_events.models import PendingDelivery, WebhookDelivery, WebhookEndpoint
from job_events.tasks import webhook_deliver_task
from runner_jobs import services
from runner_jobs.events import event_type_matches
from runner_jobs.models import JobEvent
from runner_jobs.tasks import execute_job_task
from tests.api.conftest import token_client
from tests.events.webhooks import URL, endpoint_for, pending_for
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory, job_in_state


def verify(secret: str, header: str, body: bytes) -> bool:
    """What a receiver does (the README's recipe)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


def deliver_until_done(event: JobEvent) -> list[float]:
    """The Celery task's retry loop, run here: attempt, wait the returned delay, attempt again."""
    (pending_id,) = pending_for(event)
    delays = []
    while (delay := herald.webhook_deliver(pending_id=pending_id)) is not None:
        delays.append(delay)
        time.sleep(delay)
    assert not PendingDelivery.objects.filter(pk=pending_id).exists()
    return delays


# --- API --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_registers_an_endpoint_and_sees_the_secret_once(admin_user, workspace):
    client = token_client(admin_user)
    body = {"workspace": "acme", "url": "https://example.com/hook", "event_types": ["job.*"]}
    response = client.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert set(created) == {
        "id",
        "workspace",
        "url",
        "event_types",
        "is_active",
        "created_at",
        "secret",
    }
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret == created["secret"]
    assert endpoint.created_by == admin_user and endpoint.workspace == workspace

    listed = client.get(URL).json()
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in client.get(f"{URL}{created['id']}/").json()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"event_types": []}, "event_types"),
        ({"event_types": "job.completed"}, "event_types"),
        ({"event_types": ["Job.Completed"]}, "event_types"),
        ({"event_types": [1]}, "event_types"),
        ({"event_types": [f"t.e{n}" for n in range(51)]}, "event_types"),
        ({"workspace": "globex"}, "workspace"),
        ({"workspace": "nowhere"}, "workspace"),
    ],
)
def test_bad_input_is_a_400_and_creates_nothing(admin_user, change, field):
    WorkspaceFactory(slug="globex")
    body = {"workspace": "acme", "url": "https://example.com/hook", "event_types": ["*"], **change}
    response = token_client(admin_user).post(URL, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "member"])
def test_only_workspace_admins_manage_webhooks(workspace, role):
    user = UserFactory(username=f"u-{role}")
    MembershipFactory(user=user, workspace=workspace, role=role)
    existing = endpoint_for(workspace, "https://example.com/a")
    client = token_client(user)
    body = {"workspace": "acme", "url": "https://example.com/hook", "event_types": ["*"]}
    response = client.post(URL, body, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert client.get(URL).json() == []
    assert client.delete(f"{URL}{existing.pk}/").status_code == 404
    assert WebhookEndpoint.objects.count() == 1


@pytest.mark.django_db
def test_unauthenticated_is_a_401():
    from rest_framework.test import APIClient

    assert APIClient().get(URL).status_code == 401


@pytest.mark.django_db
def test_admin_deletes_an_endpoint_but_not_another_workspaces(admin_user, workspace):
    mine = endpoint_for(workspace, "https://example.com/mine")
    theirs = endpoint_for(WorkspaceFactory(slug="globex"), "https://example.com/theirs")
    client = token_client(admin_user)
    assert client.delete(f"{URL}{theirs.pk}/").status_code == 404
    assert client.delete(f"{URL}{mine.pk}/").status_code == 204
    assert list(WebhookEndpoint.objects.all()) == [theirs]


# --- Admin ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_site_creates_an_endpoint_with_a_secret_shown_once(workspace):
    staff = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(staff)
    response = client.post(
        "/admin/job_events/webhookendpoint/add/",
        {
            "workspace": workspace.pk,
            "url": "https://example.com/hook",
            "event_types": '["job.completed"]',
            "is_active": "on",
        },
        follow=True,
    )
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret.startswith("whsec_") and endpoint.created_by == staff
    assert endpoint.secret in response.content.decode()
    page = client.get(f"/admin/job_events/webhookendpoint/{endpoint.pk}/change/")
    assert page.status_code == 200 and endpoint.secret not in page.content.decode()
    assert client.get("/admin/job_events/webhookdelivery/").status_code == 200

    edited = client.post(
        f"/admin/job_events/webhookendpoint/{endpoint.pk}/change/",
        {
            "workspace": workspace.pk,
            "url": "https://example.com/moved",
            "event_types": '["*"]',
            "is_active": "on",
        },
        follow=True,
    )
    assert edited.status_code == 200
    same_secret = WebhookEndpoint.objects.get()
    assert same_secret.url == "https://example.com/moved" and same_secret.secret == endpoint.secret
    assert endpoint.secret not in edited.content.decode()


@pytest.mark.django_db
def test_admin_site_refuses_a_non_http_url(workspace):
    staff = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(staff)
    response = client.post(
        "/admin/job_events/webhookendpoint/add/",
        {"workspace": workspace.pk, "url": "ftp://example.com/x", "event_types": '["*"]'},
    )
    assert response.status_code == 200  # the form again, with its error
    assert not WebhookEndpoint.objects.exists()


# --- Delivery ---------------------------------------------------------------------------------


def test_event_type_patterns():
    assert event_type_matches(["*"], "job.completed")
    assert event_type_matches(["job.*"], "job.completed")
    assert event_type_matches(["job.completed"], "job.completed")
    assert not event_type_matches(["job.*"], "step.started")
    assert not event_type_matches(["job.*"], "jobs.x")
    assert not event_type_matches(["job.failed"], "job.completed")


def test_retry_delays_grow_exponentially_and_are_capped(settings):
    settings.RUNNER_WEBHOOK_BACKOFF_SECONDS = 10
    settings.RUNNER_WEBHOOK_BACKOFF_MAX_SECONDS = 100
    delays = [herald.webhook_retry_delay(n) for n in range(1, 6)]
    assert 10 <= delays[0] <= 12.5 and 20 <= delays[1] <= 25 and 40 <= delays[2] <= 50
    assert delays[0] < delays[1] < delays[2] < delays[3]
    assert delays[4] == 100


@pytest.mark.django_db
def test_signed_delivery_retried_with_growing_delays_three_attempts_logged(
    receiver, workspace, settings
):
    settings.RUNNER_WEBHOOK_BACKOFF_SECONDS = 0.2
    receiver.statuses = [500, 500, 200]
    job = job_in_state("completed", workspace=workspace)
    event = JobEvent.objects.get(job=job, type="job.completed")
    endpoint = endpoint_for(workspace, receiver.url, ["job.completed"])

    delays = deliver_until_done(event)

    assert len(delays) == 2 and delays[0] < delays[1]
    assert str(WebhookDelivery.objects.order_by("attempt").first()).endswith("#1 (500)")
    assert len(receiver.requests) == 3
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert 0.2 <= gaps[0] < gaps[1]
    log = list(WebhookDelivery.objects.filter(endpoint=endpoint).order_by("attempt"))
    assert [(d.attempt, d.status_code, d.succeeded) for d in log] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert log[0].error == "HTTP 500: nope" and log[2].error == ""
    assert log[0].next_attempt_at is not None and log[2].next_attempt_at is None
    assert all(d.latency_ms >= 0 and d.event_id == event.pk for d in log)
    for request in receiver.requests:
        assert request.headers["Content-Type"] == "application/json"
        assert verify(endpoint.secret, request.headers["X-Runner-Signature"], request.body)
        assert not verify("whsec_wrong", request.headers["X-Runner-Signature"], request.body)
    body = json.loads(receiver.requests[-1].body)
    assert body["event"]["id"] == event.pk and body["event"]["type"] == "job.completed"
    assert body["job"]["id"] == str(job.pk) and body["job"]["status"] == "completed"
    assert body["job"]["workspace"] == "acme"


@pytest.mark.django_db
def test_a_slow_endpoint_times_out_and_is_logged(receiver, workspace, settings):
    settings.RUNNER_WEBHOOK_TIMEOUT_SECONDS = 0.2
    receiver.delay = 1
    event = JobEvent.objects.filter(job=job_in_state("pending", workspace=workspace)).get()
    endpoint_for(workspace, receiver.url)
    (pending_id,) = pending_for(event)
    assert herald.webhook_deliver(pending_id=pending_id) is not None
    log = WebhookDelivery.objects.get()
    assert log.status_code is None and not log.succeeded
    assert log.error.startswith("ReadTimeoutError") and log.latency_ms < 1000
    assert PendingDelivery.objects.get().attempts == 1


@pytest.mark.django_db
def test_an_unreachable_endpoint_is_logged_and_given_up_after_the_last_attempt(workspace, settings):
    settings.RUNNER_WEBHOOK_MAX_ATTEMPTS = 2
    settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    event = JobEvent.objects.filter(job=job_in_state("pending", workspace=workspace)).get()
    endpoint = endpoint_for(workspace, "http://127.0.0.1:1/hook")
    (pending_id,) = pending_for(event)
    assert herald.webhook_deliver(pending_id=pending_id)
    # Not due yet: a duplicate message does nothing.
    assert herald.webhook_deliver(pending_id=pending_id) is None
    assert WebhookDelivery.objects.count() == 1
    PendingDelivery.objects.update(due_at=timezone.now())
    assert herald.webhook_deliver(pending_id=pending_id) is None
    log = list(WebhookDelivery.objects.order_by("attempt"))
    assert [d.error.split(":")[0] for d in log] == ["NewConnectionError", "NewConnectionError"]
    assert log[1].next_attempt_at is None
    assert str(log[1]) == f"event {event.pk} -> endpoint {endpoint.pk} #2 (error)"
    assert not PendingDelivery.objects.exists()


@pytest.mark.django_db
def test_a_removed_or_paused_endpoint_gets_nothing(receiver, workspace):
    event = JobEvent.objects.filter(job=job_in_state("pending", workspace=workspace)).get()
    paused = endpoint_for(workspace, receiver.url)
    gone = endpoint_for(workspace, receiver.url)
    pending_ids = pending_for(event)
    WebhookEndpoint.objects.filter(pk=paused.pk).update(is_active=False)
    herald.webhook_endpoint_delete(endpoint=gone)
    for pending_id in pending_ids:
        assert herald.webhook_deliver(pending_id=pending_id) is None
    assert receiver.requests == [] and not WebhookDelivery.objects.exists()
    assert not PendingDelivery.objects.exists()


@pytest.fixture
def eager_celery() -> Iterator[None]:
    conf = webhook_deliver_task.app.conf
    before = conf.task_always_eager
    conf.task_always_eager = True
    yield
    conf.task_always_eager = before


@pytest.mark.django_db(transaction=True)
def test_events_are_delivered_after_commit_to_matching_endpoints_only(
    receiver, eager_celery, settings
):
    settings.RUNNER_WEBHOOK_BACKOFF_SECONDS = 0.01
    receiver.statuses = [500, 200]
    acme = WorkspaceFactory(slug="acme")
    wanted = endpoint_for(acme, receiver.url, ["job.completed"])
    endpoint_for(acme, receiver.url, ["step.*"])
    endpoint_for(WorkspaceFactory(slug="globex"), receiver.url, ["*"])

    job = job_in_state("completed", workspace=acme)

    # Only job.completed of acme matched; the Celery task retried the 500 once.
    assert len(receiver.requests) == 2
    log = list(WebhookDelivery.objects.order_by("attempt"))
    assert [(d.endpoint_id, d.attempt, d.status_code) for d in log] == [
        (wanted.pk, 1, 500),
        (wanted.pk, 2, 200),
    ]
    assert log[0].event == JobEvent.objects.get(job=job, type="job.completed")


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_event_is_never_delivered(receiver, eager_celery):
    from django.db import transaction

    acme = WorkspaceFactory(slug="acme")
    endpoint_for(acme, receiver.url, ["*"])
    job = job_in_state("running", workspace=acme)
    receiver.requests.clear()
    WebhookDelivery.objects.all().delete()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.event_append(job_id=job.pk, type="test.doomed", actor="w")
        raise RuntimeError("rollback")
    assert receiver.requests == [] and not WebhookDelivery.objects.exists()


# --- Reading a workspace's endpoints once per request or task --------------------------------


def endpoint_reads(captured: CaptureQueriesContext) -> int:
    """Reads of a workspace's endpoints (a delivery reads its one endpoint by id)."""
    return sum(
        'FROM "job_events_webhookendpoint"' in q["sql"]
        and '"job_events_webhookendpoint"."workspace_id" =' in q["sql"]
        for q in captured.captured_queries
    )


@pytest.mark.django_db(transaction=True)
def test_a_create_request_reads_the_endpoints_once_and_delivers_both_events(receiver, eager_celery):
    acme = WorkspaceFactory(slug="acme")
    user = UserFactory(username="alice")
    MembershipFactory(user=user, workspace=acme, role="member")
    endpoint_for(acme, receiver.url, ["job.*"])
    body = {"workspace": "acme", "type": "echo", "payload": {}}
    client = token_client(user)

    with CaptureQueriesContext(connection) as captured:
        assert client.post("/api/v1/runner-jobs/", body, format="json").status_code == 201

    assert endpoint_reads(captured) == 1
    assert [json.loads(r.body)["event"]["type"] for r in receiver.requests] == [
        "job.created",
        "job.queued",
    ]
    assert WebhookDelivery.objects.filter(succeeded=True).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_task_reads_the_endpoints_once_for_all_its_events(receiver, eager_celery):
    acme = WorkspaceFactory(slug="acme")
    endpoint_for(acme, receiver.url, ["job.completed"])
    job = job_in_state("queued", workspace=acme)

    with CaptureQueriesContext(connection) as captured:
        execute_job_task.apply(args=[str(job.pk)])

    assert endpoint_reads(captured) == 1  # job.started and job.completed
    assert [json.loads(r.body)["event"]["type"] for r in receiver.requests] == ["job.completed"]


@pytest.mark.django_db
def test_an_endpoint_made_during_a_request_or_task_is_seen_within_the_memo_time(
    receiver, eager_celery, workspace, monkeypatch
):
    event = JobEvent.objects.filter(job=job_in_state("pending", workspace=workspace)).get()

    def enqueue() -> int:
        pending_ids = herald.webhook_deliveries_record(events=[event], workspace_id=workspace.pk)
        return herald.webhook_deliveries_publish(pending_ids)

    with herald.webhook_endpoints_memo():
        assert enqueue() == 0
        endpoint_for(workspace, receiver.url)
        assert enqueue() == 0  # read less than ENDPOINTS_MEMO_SECONDS ago
        monkeypatch.setattr(herald, "ENDPOINTS_MEMO_SECONDS", 0)
        assert enqueue() == 1
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_outside_a_request_or_task_every_event_reads_the_endpoints(receiver, workspace):
    event = JobEvent.objects.filter(job=job_in_state("pending", workspace=workspace)).get()
    webhook_deliver_task.apply(args=[0])  # a task's memo ends with the task
    with CaptureQueriesContext(connection) as captured:
        for _ in range(2):
            herald.webhook_deliveries_record(events=[event], workspace_id=workspace.pk)
    assert endpoint_reads(captured) == 2
