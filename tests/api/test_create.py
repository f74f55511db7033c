"""POST /api/v1/runner-jobs/: create, validation, roles, idempotency, body limits."""

import json

import pytest
from django.test import override_settings

from runner_jobs.models import JobEvent, RunnerJob
from tests.api.conftest import token_client
from tests.factories import MembershipFactory, UserFactory

URL = "/api/v1/runner-jobs/"
pytestmark = pytest.mark.django_db


def create(client, body, **headers):
    return client.post(URL, body, format="json", headers=headers)


def test_create_returns_201_with_the_job_etag_and_location(client):
    response = create(
        client,
        {
            "workspace": "acme",
            "type": "echo",
            "payload": {"a": 1},
            "priority": 7,
            "agent_task_id": "T-1",
            "max_attempts": 4,
            "tags": ["team:billing", "nightly"],
            "metadata": {"customer": "42"},
        },
    )
    assert response.status_code == 201
    body = response.json()
    job = RunnerJob.objects.get()
    assert body == {
        "id": str(job.id),
        "workspace": "acme",
        "type": "echo",
        "status": "queued",
        "priority": 7,
        "progress": 0,
        "payload": {"a": 1},
        "result": None,
        "error": "",
        "agent_task_id": "T-1",
        "attempts": 0,
        "max_attempts": 4,
        "retry_of": None,
        "schedule": None,
        "tags": ["team:billing", "nightly"],
        "metadata": {"customer": "42"},
        "created_by": "alice",
        "version": 2,
        "created_at": body["created_at"],
        "queued_at": body["queued_at"],
        "started_at": None,
        "completed_at": None,
        "concurrency_key": None,
        "concurrency_limit": None,
        "unique_key": None,
        "run_at": None,
        "ttl_seconds": None,
        "expires_at": None,
        "timeout_seconds": None,
    }
    assert body["queued_at"] is not None
    assert response["ETag"] == '"2"'
    assert response["Location"] == f"http://testserver/api/v1/runner-jobs/{job.id}/"
    # Inserted queued, in one statement with both its events.
    events = JobEvent.objects.filter(job=job).order_by("id")
    assert [(e.type, e.actor) for e in events] == [
        ("job.created", "user:alice"),
        ("job.queued", "system"),
    ]


def test_create_defaults(client):
    response = create(client, {"workspace": "acme", "type": "echo"})
    assert response.status_code == 201
    body = response.json()
    assert (body["payload"], body["priority"], body["max_attempts"], body["agent_task_id"]) == (
        {},
        5,
        3,
        None,
    )


def test_create_external_type_is_queued_at_once(client):
    response = create(client, {"workspace": "acme", "type": "agent-task", "payload": {}})
    assert response.status_code == 201
    assert response.json()["status"] == "queued"
    assert response["ETag"] == '"2"'


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workspace": "acme", "type": "nope", "payload": {}}, "type"),
        ({"workspace": "acme", "type": "echo", "payload": [1]}, "payload"),
        ({"workspace": "acme", "type": "echo", "payload": "x"}, "payload"),
        ({"workspace": "acme", "type": "echo", "payload": {}, "priority": 10}, "priority"),
        ({"workspace": "acme", "type": "echo", "payload": {}, "priority": -1}, "priority"),
        ({"workspace": "acme", "type": "echo", "payload": {}, "priority": "high"}, "priority"),
        ({"workspace": "acme", "type": "echo", "payload": {}, "max_attempts": 0}, "max_attempts"),
        (
            {"workspace": "acme", "type": "echo", "payload": {}, "max_attempts": 2**40},
            "max_attempts",
        ),
        (
            {"workspace": "acme", "type": "echo", "payload": {}, "agent_task_id": "x" * 256},
            "agent_task_id",
        ),
        ({"workspace": "acme", "type": "echo", "payload": {"k": "a\x00b"}}, "payload"),
        ({"workspace": "acme", "type": "echo", "payload": {"a\x00": 1}}, "payload"),
        ({"workspace": "acme", "type": "e\x00cho", "payload": {}}, "type"),
        ({"workspace": "not a slug", "type": "echo", "payload": {}}, "workspace"),
        ({"type": "echo", "payload": {}}, "workspace"),
        ({"workspace": "acme", "payload": {}}, "type"),
    ],
)
def test_bad_input_is_a_400_with_field_errors_and_creates_nothing(client, body, field):
    response = create(client, body)
    assert response.status_code == 400
    assert field in response.json()
    assert not RunnerJob.objects.exists()


def test_payload_over_256_kib_is_a_400(client):
    payload = {"blob": "x" * (256 * 1024)}
    response = create(client, {"workspace": "acme", "type": "echo", "payload": payload})
    assert response.status_code == 400
    assert response.json() == {"payload": ["Must be at most 262144 bytes as JSON."]}
    assert not RunnerJob.objects.exists()


def test_payload_nested_too_deep_is_a_400(client):
    payload: dict = {}
    inner = payload
    for _ in range(70):
        inner["k"] = {}
        inner = inner["k"]
    response = create(client, {"workspace": "acme", "type": "echo", "payload": payload})
    assert response.status_code == 400
    assert response.json() == {"payload": ["payload: nests deeper than 64 levels."]}


def test_json_nested_deeper_than_the_parser_can_go_is_a_400(client):
    body = '{"workspace": "acme", "type": "echo", "payload": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "JSON parse error - nested too deeply.",
        "code": "parse_error",
    }


def test_malformed_json_is_a_400(client):
    response = client.post(URL, '{"workspace": "acme",', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert not RunnerJob.objects.exists()


def test_a_json_body_that_is_not_an_object_is_a_400(client):
    response = client.post(URL, "[1, 2]", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": ["Invalid data. Expected a dictionary, but got list."]
    }


def test_other_media_type_is_a_415(client):
    response = client.post(URL, "workspace=acme", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_body_over_the_configured_limit_is_a_413_in_json(client):
    response = create(client, {"workspace": "acme", "type": "echo", "payload": {"x": "y" * 2000}})
    assert response.status_code == 413
    assert response.json() == {
        "detail": "The request body is over 1000 bytes.",
        "code": "request_too_large",
    }
    assert not RunnerJob.objects.exists()


def test_body_over_the_default_limit_is_a_413(client):
    body = json.dumps({"workspace": "acme", "type": "echo", "payload": {"x": "y" * 600_000}})
    response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 413


def test_workspace_you_are_not_a_member_of_is_a_404_and_no_job(client, other_workspace):
    response = create(client, {"workspace": "globex", "type": "echo", "payload": {}})
    assert response.status_code == 404
    assert response.json() == {"detail": "No such workspace among yours.", "code": "not_found"}
    assert not RunnerJob.objects.exists()


def test_unknown_workspace_is_the_same_404(client):
    response = create(client, {"workspace": "nowhere", "type": "echo", "payload": {}})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_viewer_cannot_create(viewer_client):
    response = create(viewer_client, {"workspace": "acme", "type": "echo", "payload": {}})
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not RunnerJob.objects.exists()


def test_admin_can_create(workspace):
    admin = UserFactory(username="ada")
    MembershipFactory(user=admin, workspace=workspace, role="admin")
    response = create(token_client(admin), {"workspace": "acme", "type": "echo", "payload": {}})
    assert response.status_code == 201


def test_unauthenticated_is_a_401(workspace):
    from rest_framework.test import APIClient

    response = APIClient().post(URL, {"workspace": "acme", "type": "echo"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"


class TestIdempotencyKey:
    body = {"workspace": "acme", "type": "echo", "payload": {"n": 1}}

    def test_repeat_returns_the_same_job_with_200(self, client):
        first = create(client, self.body, **{"Idempotency-Key": "k1"})
        again = create(client, self.body, **{"Idempotency-Key": "k1"})
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == first.json()
        assert again["ETag"] == first["ETag"]
        assert RunnerJob.objects.count() == 1

    def test_same_key_different_body_is_a_422(self, client):
        create(client, self.body, **{"Idempotency-Key": "k1"})
        response = create(client, {**self.body, "priority": 9}, **{"Idempotency-Key": "k1"})
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_conflict"
        assert RunnerJob.objects.count() == 1

    def test_keys_are_per_user(self, client, workspace):
        bob = UserFactory(username="bob")
        MembershipFactory(user=bob, workspace=workspace)
        first = create(client, self.body, **{"Idempotency-Key": "k1"})
        other = create(token_client(bob), self.body, **{"Idempotency-Key": "k1"})
        assert (first.status_code, other.status_code) == (201, 201)
        assert first.json()["id"] != other.json()["id"]

    def test_without_a_key_every_create_is_new(self, client):
        create(client, self.body)
        create(client, self.body)
        assert RunnerJob.objects.count() == 2

    @pytest.mark.parametrize("key", ["", "k" * 256, "tab\there"])
    def test_bad_key_is_a_400(self, client, key):
        response = create(client, self.body, **{"Idempotency-Key": key})
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()
        assert not RunnerJob.objects.exists()
