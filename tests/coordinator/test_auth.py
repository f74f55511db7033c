"""Who may call the coordinator API: a valid, unrevoked, unexpired key in X-API-Key, limited to
its workspaces. Consumer tokens and coordinator keys are never accepted in each other's place."""

from datetime import timedelta

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from coordinator.models import CoordinatorKey
from runner_jobs.models import JobEvent, RunnerJob
from tests.coordinator.conftest import BASE, key_client, make_key
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db


def agent_job(status: str, workspace) -> RunnerJob:
    return job_in_state(status, type="agent-task", workspace=workspace)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_X_API_KEY": "nope"},
        {"HTTP_X_API_KEY": "abcdefgh.wrong-secret"},
        {"HTTP_AUTHORIZATION": "Api-Key whatever"},
        # Bytes that are not UTF-8 (as a server hands them over) and a NUL: refused unread.
        {"HTTP_X_API_KEY": "\xff\xfe.\xff"},
        {"HTTP_X_API_KEY": "abc\x00def.secret"},
    ],
)
def test_missing_or_wrong_key_is_401(headers):
    make_key()
    client = APIClient()
    client.credentials(**headers)
    response = client.get(f"{BASE}/health/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "X-API-Key"
    assert response.json()["code"] in {"not_authenticated", "authentication_failed"}


def test_right_prefix_wrong_secret_is_401():
    raw = make_key()
    prefix = raw.split(".")[0]
    response = key_client(f"{prefix}.{'x' * 32}").get(f"{BASE}/health/")
    assert response.status_code == 401


def test_revoked_key_is_401_and_changes_nothing(workspace):
    raw = make_key()
    job = agent_job("running", workspace)
    CoordinatorKey.objects.update(revoked=True)
    response = key_client(raw).post(f"{BASE}/jobs/{job.pk}/complete/", {}, format="json")
    assert response.status_code == 401
    job.refresh_from_db()
    assert job.status == "running"


def test_expired_key_is_401():
    raw = make_key()
    CoordinatorKey.objects.update(expiry_date=timezone.now() - timedelta(seconds=1))
    assert key_client(raw).get(f"{BASE}/health/").status_code == 401


def test_consumer_token_is_refused_on_coordinator_endpoints(member):
    _, token = AuthToken.objects.create(member.user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(f"{BASE}/health/").status_code == 401
    response = client.post(f"{BASE}/jobs/claim/", {"types": ["agent-task"]}, format="json")
    assert response.status_code == 401


def test_session_user_is_refused_on_coordinator_endpoints(member):
    client = APIClient()
    client.force_login(member.user)
    assert client.get(f"{BASE}/health/").status_code == 401


def test_coordinator_key_is_refused_on_consumer_endpoints(workspace):
    job = agent_job("queued", workspace)
    client = key_client(make_key())
    assert client.get("/api/v1/runner-jobs/").status_code == 401
    assert client.get(f"/api/v1/runner-jobs/{job.pk}/").status_code == 401
    response = client.post(f"/api/v1/runner-jobs/{job.pk}/cancel/", {}, format="json")
    assert response.status_code == 401
    job.refresh_from_db()
    assert job.status == "queued"


def test_scoped_key_sees_only_its_workspaces(workspace):
    other = WorkspaceFactory(slug="other")
    mine = agent_job("running", workspace)
    theirs = agent_job("running", other)
    theirs_queued = agent_job("queued", other)
    client = key_client(make_key("scoped", [workspace]))

    assert client.get(f"{BASE}/health/").json()["workspaces"] == ["acme"]
    assert client.get(f"{BASE}/jobs/{mine.pk}/").status_code == 200
    for path, body in [
        ("", None),
        ("status/", {"status": "cancelled"}),
        ("progress/", {"progress": 5}),
        ("complete/", {"result": 1}),
        ("fail/", {"error": "x"}),
        ("steps/", {"name": "s"}),
        ("events/", {"type": "agent.note"}),
    ]:
        url = f"{BASE}/jobs/{theirs.pk}/{path}"
        response = client.get(url) if body is None else client.post(url, body, format="json")
        assert response.status_code == 404, path
        assert response.json() == {"detail": "No such job.", "code": "not_found"}
    response = client.patch(f"{BASE}/jobs/{theirs.pk}/steps/1/", {"status": "completed"})
    assert response.status_code == 404

    # A claim never reaches outside the key's workspaces.
    response = client.post(f"{BASE}/jobs/claim/", {"types": ["agent-task"]}, format="json")
    assert response.json() == {"jobs": []}
    response = client.post(
        f"{BASE}/jobs/", {"workspace": "other", "type": "agent-task"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"workspace": ["No such workspace."]}

    for job in (theirs, theirs_queued):
        version = job.version
        job.refresh_from_db()
        assert job.version == version == JobEvent.objects.filter(job=job).count()
    assert RunnerJob.objects.count() == 3


def test_scoped_key_claims_and_creates_in_its_workspaces(workspace):
    other = WorkspaceFactory(slug="other")
    agent_job("queued", other)
    mine = agent_job("queued", workspace)
    client = key_client(make_key("scoped", [workspace]))
    response = client.post(
        f"{BASE}/jobs/claim/", {"types": ["agent-task"], "limit": 10}, format="json"
    )
    assert [j["id"] for j in response.json()["jobs"]] == [str(mine.pk)]
    response = client.post(
        f"{BASE}/jobs/", {"workspace": "acme", "type": "agent-task"}, format="json"
    )
    assert response.status_code == 201


def test_key_is_stored_hashed():
    raw = make_key()
    key = CoordinatorKey.objects.get()
    assert raw not in (key.id, key.hashed_key)
    assert key.hashed_key.startswith("sha512$$")
