"""``/api/v1/job-types/``: every registered type with its policy and live jobs in a workspace;
workspace admins change the policy (SPEC §8, "Type policies")."""

import pytest

from runner_jobs.models import JobTypePolicy
from runner_jobs.registry import job_types
from runner_jobs.services.policies import job_type_policy_update
from tests.api.conftest import token_client
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

URL = "/api/v1/job-types/"


@pytest.fixture
def admin_client(workspace):
    admin = UserFactory(username="ada")
    MembershipFactory(user=admin, workspace=workspace, role="admin")
    return token_client(admin)


def state(name: str, **fields) -> dict:
    return {
        "name": name,
        "external": name == "agent-task",
        "paused": False,
        "max_running": None,
        "queued": 0,
        "running": 0,
        **fields,
    }


def test_every_registered_type_is_listed_with_its_policy_and_live_jobs(
    client, workspace, other_workspace
):
    job_in_state("queued", workspace=workspace, type="echo")
    job_in_state("queued", workspace=workspace, type="echo")
    job_in_state("running", workspace=workspace, type="echo")
    job_in_state("completed", workspace=workspace, type="echo")
    job_in_state("queued", workspace=workspace, type="agent-task")
    job_in_state("queued", workspace=other_workspace, type="sleep")
    job_type_policy_update(workspace=workspace, type="sleep", actor="u", paused=True)
    job_type_policy_update(workspace=other_workspace, type="echo", actor="u", max_running=3)

    response = client.get(URL, {"workspace": "acme"})

    assert response.status_code == 200
    listed = {item["name"]: item for item in response.json()}
    assert sorted(listed) == sorted(job_types())
    assert listed["echo"] == state("echo", queued=2, running=1)
    assert listed["sleep"] == state("sleep", paused=True)
    assert listed["agent-task"] == state("agent-task", queued=1)
    assert listed["fail"] == state("fail")


def test_a_viewer_lists_too(viewer_client):
    response = viewer_client.get(URL, {"workspace": "acme"})
    assert response.status_code == 200
    assert len(response.json()) == len(job_types())


@pytest.mark.parametrize(
    ("query", "status"), [({}, 400), ({"workspace": "globex"}, 404), ({"workspace": "nope"}, 404)]
)
def test_the_list_needs_one_of_your_workspaces(client, other_workspace, query, status):
    response = client.get(URL, query)
    assert response.status_code == status
    if status == 400:
        assert set(response.json()) == {"workspace"}


def test_a_stranger_gets_404_and_no_credentials_401(workspace):
    assert token_client(UserFactory()).get(URL, {"workspace": "acme"}).status_code == 404
    anonymous = token_client(UserFactory())
    anonymous.credentials()
    assert anonymous.get(URL, {"workspace": "acme"}).status_code == 401


def test_an_admin_pauses_and_caps_a_type(admin_client, workspace):
    job_in_state("queued", workspace=workspace, type="sleep")

    paused = admin_client.patch(
        f"{URL}sleep/", {"workspace": "acme", "paused": True}, format="json"
    )
    assert paused.status_code == 200
    assert paused.json() == state("sleep", paused=True, queued=1)

    capped = admin_client.patch(
        f"{URL}sleep/", {"workspace": "acme", "max_running": 4}, format="json"
    )
    assert capped.json() == state("sleep", paused=True, max_running=4, queued=1)

    policy = JobTypePolicy.objects.get(workspace=workspace, type="sleep")
    assert (policy.paused, policy.max_running, policy.updated_by) == (True, 4, "user:ada")

    cleared = admin_client.patch(
        f"{URL}sleep/", {"workspace": "acme", "paused": False, "max_running": None}, format="json"
    )
    assert cleared.json() == state("sleep", queued=1)


def test_a_change_that_changes_nothing_writes_nothing(admin_client, workspace):
    response = admin_client.patch(
        f"{URL}echo/", {"workspace": "acme", "paused": False}, format="json"
    )
    assert response.json() == state("echo")
    assert not JobTypePolicy.objects.exists()


def test_members_and_viewers_are_refused(client, viewer_client, workspace):
    for who in (client, viewer_client):
        response = who.patch(f"{URL}echo/", {"workspace": "acme", "paused": True}, format="json")
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"
    assert not JobTypePolicy.objects.exists()


def test_an_unknown_type_or_workspace_is_404(admin_client, other_workspace):
    unknown = admin_client.patch(
        f"{URL}nope/", {"workspace": "acme", "paused": True}, format="json"
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"
    elsewhere = admin_client.patch(
        f"{URL}echo/", {"workspace": "globex", "paused": True}, format="json"
    )
    assert elsewhere.status_code == 404
    assert not JobTypePolicy.objects.exists()


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"max_running": 0}, {"max_running"}),
        ({"max_running": 1001}, {"max_running"}),
        ({"max_running": "many"}, {"max_running"}),
        ({"max_running": 1.5}, {"max_running"}),
        ({"paused": "perhaps"}, {"paused"}),
        ({"paused": None}, {"paused"}),
        ({"paused": True, "max_running": -1}, {"max_running"}),
        ({"workspace": None, "paused": True}, {"workspace"}),
        ({"workspace": "a" * 65, "paused": True}, {"workspace"}),
        ({"workspace": "ac\u0000me", "paused": True}, {"workspace"}),
        ({"paused": True, "max_runing": 3}, {"max_runing"}),
    ],
)
def test_bad_values_are_400_with_field_errors_and_nothing_is_written(
    admin_client, workspace, body, fields
):
    job_type_policy_update(workspace=workspace, type="echo", actor="u", max_running=2)
    response = admin_client.patch(f"{URL}echo/", {"workspace": "acme", **body}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == fields
    policy = JobTypePolicy.objects.get()
    assert (policy.paused, policy.max_running, policy.updated_by) == (False, 2, "u")


def test_the_other_methods_are_not_allowed(admin_client):
    assert admin_client.get(f"{URL}echo/").status_code == 405
    assert admin_client.put(f"{URL}echo/", {"workspace": "acme"}, format="json").status_code == 405
    assert admin_client.post(URL, {"workspace": "acme"}, format="json").status_code == 405


def test_another_workspace_keeps_its_own_policy(admin_client, workspace):
    other = WorkspaceFactory(slug="initech")
    admin_client.patch(f"{URL}echo/", {"workspace": "acme", "paused": True}, format="json")
    assert not JobTypePolicy.objects.filter(workspace_id=other.pk).exists()
