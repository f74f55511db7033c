"""``/api/v1/schedules/``: roles, scoping and bad input."""

import pytest
from rest_framework.test import APIClient

from runner_jobs.models import RunnerJob, Schedule
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory

URL = "/api/v1/schedules/"
pytestmark = pytest.mark.django_db

BODY = {
    "workspace": "acme",
    "name": "nightly",
    "cron": "30 2 * * *",
    "timezone": "Europe/Paris",
    "job": {"type": "echo", "payload": {"report": "daily"}, "priority": 3},
    "overlap": "skip",
}


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def api(user, member):
    return client_for(user)


@pytest.fixture
def viewer(workspace):
    user = UserFactory(username="vera")
    MembershipFactory(user=user, workspace=workspace, role="viewer")
    return client_for(user)


@pytest.fixture
def schedule(api):
    response = api.post(URL, BODY, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_create_read_list(api, schedule):
    assert set(schedule) == {
        "id",
        "workspace",
        "name",
        "cron",
        "interval_seconds",
        "timezone",
        "job",
        "overlap",
        "paused",
        "next_run_at",
        "last_run_at",
        "created_by",
        "created_at",
        "updated_at",
    }
    assert schedule["workspace"] == "acme" and schedule["created_by"] == "alice"
    assert schedule["interval_seconds"] is None and schedule["last_run_at"] is None
    assert schedule["job"]["payload"] == {"report": "daily"}
    assert schedule["job"]["priority"] == 3
    # 02:30 in Paris is 00:30 or 01:30 UTC.
    assert schedule["next_run_at"][11:16] in {"00:30", "01:30"}
    assert api.get(f"{URL}{schedule['id']}/").json() == schedule
    assert [s["id"] for s in api.get(URL).json()] == [schedule["id"]]


def test_an_interval_schedule_in_utc_by_default(api, member):
    body = {"workspace": "acme", "name": "often", "interval_seconds": 10, "job": {"type": "echo"}}
    response = api.post(URL, body, format="json")
    assert response.status_code == 201
    assert response.json()["timezone"] == "UTC" and response.json()["cron"] == ""
    assert response.json()["overlap"] == "allow" and response.json()["paused"] is False


def test_patch_switches_timing_pauses_and_changes_the_job(api, schedule):
    url = f"{URL}{schedule['id']}/"
    response = api.patch(url, {"interval_seconds": 3600, "paused": True}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["cron"], body["interval_seconds"], body["paused"]) == ("", 3600, True)
    body = api.patch(url, {"job": {"type": "sleep", "payload": {"seconds": 1}}}, format="json")
    assert body.json()["job"]["type"] == "sleep"
    assert api.patch(url, {"cron": "0 * * * *"}, format="json").json()["interval_seconds"] is None


def test_trigger_makes_a_job_that_names_the_schedule(api, schedule):
    response = api.post(f"{URL}{schedule['id']}/trigger/")
    assert response.status_code == 201
    assert response.json()["schedule"] == schedule["id"]
    job = RunnerJob.objects.get(pk=response.json()["id"])
    assert str(job.schedule_id) == schedule["id"]
    assert api.get(f"/api/v1/runner-jobs/{job.pk}/").json()["schedule"] == schedule["id"]
    assert job.payload == {"report": "daily"}


def test_delete(api, schedule):
    assert api.delete(f"{URL}{schedule['id']}/").status_code == 204
    assert not Schedule.objects.exists()


def test_viewers_read_but_every_write_is_403_and_changes_nothing(viewer, schedule):
    url = f"{URL}{schedule['id']}/"
    assert viewer.get(url).status_code == 200
    for response in (
        viewer.post(URL, {**BODY, "name": "other"}, format="json"),
        viewer.patch(url, {"paused": True}, format="json"),
        viewer.delete(url),
        viewer.post(f"{url}trigger/"),
    ):
        assert response.status_code == 403
        assert set(response.json()) == {"detail", "code"}
    assert Schedule.objects.get().paused is False
    assert Schedule.objects.count() == 1
    assert not RunnerJob.objects.exists()


def test_another_workspaces_schedules_are_404(schedule):
    stranger = UserFactory(username="sam")
    MembershipFactory(user=stranger, workspace=WorkspaceFactory(slug="other"), role="admin")
    client = client_for(stranger)
    url = f"{URL}{schedule['id']}/"
    assert client.get(URL).json() == []
    for response in (
        client.get(url),
        client.patch(url, {"paused": True}, format="json"),
        client.delete(url),
        client.post(f"{url}trigger/"),
        client.post(URL, BODY, format="json"),
        client.get(f"{URL}not-a-uuid/"),
    ):
        assert response.status_code == 404
    assert APIClient().get(URL).status_code == 401


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"cron": "61 * * * *"}, {"cron"}),
        ({"cron": "0 * * * * *"}, {"cron"}),
        ({"timezone": "Mars/Olympus"}, {"timezone"}),
        ({"cron": None, "interval_seconds": 9}, {"interval_seconds"}),
        ({"interval_seconds": 60}, {"non_field_errors"}),
        ({"cron": ""}, {"non_field_errors"}),
        ({"overlap": "sometimes"}, {"overlap"}),
        ({"name": ""}, {"name"}),
        ({"workspace": None}, {"workspace"}),
        ({"job": {"type": "nope"}}, {"job"}),
        ({"job": {"type": "echo", "payload": [1]}}, {"job"}),
        ({"job": {"type": "echo", "priority": 10}}, {"job"}),
        ({"job": None}, {"job"}),
    ],
)
def test_bad_input_is_400_with_field_errors_and_writes_nothing(api, member, change, fields):
    body = {**BODY, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = api.post(URL, body, format="json")
    assert response.status_code == 400, response.json()
    assert set(response.json()) == fields
    assert not Schedule.objects.exists()


def test_bad_patches_are_400_and_change_nothing(api, schedule):
    url = f"{URL}{schedule['id']}/"
    for change, field in (
        ({"cron": "61 * * * *"}, "cron"),
        ({"interval_seconds": 5}, "interval_seconds"),
        ({"cron": "* * * * *", "interval_seconds": 60}, "non_field_errors"),
        ({"timezone": "Nowhere"}, "timezone"),
        ({"workspace": "other"}, "workspace"),
        ({"job": {"type": "nope"}}, "job"),
    ):
        response = api.patch(url, change, format="json")
        assert response.status_code == 400, change
        assert field in response.json()
    assert api.get(url).json() == schedule


def test_a_duplicate_name_is_400(api, schedule):
    response = api.post(URL, BODY, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"name"}
