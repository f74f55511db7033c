"""The job type policies' admin: list and filter them, add or change one through its form, pause
and resume selected types; every write through ``services.policies`` (its bells ring)."""

import pytest

from runner_jobs.models import JobTypePolicy
from runner_jobs.services import bell
from runner_jobs.services.policies import job_type_policy_update
from tests.admin.test_operations_admin import messages_of
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

POLICIES = "/admin/runner_jobs/jobtypepolicy/"


@pytest.fixture
def rung(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    monkeypatch.setattr(bell, "bell_ring", lambda **kwargs: calls.append(kwargs))
    return calls


def test_the_list_shows_and_filters_policies(admin_client_bob):
    acme, globex = WorkspaceFactory(slug="acme"), WorkspaceFactory(slug="globex")
    job_type_policy_update(workspace=acme, type="sleep", actor="user:ada", paused=True)
    job_type_policy_update(workspace=globex, type="echo", actor="user:gus", max_running=3)
    page = admin_client_bob.get(POLICIES).content.decode()
    assert "user:ada" in page and "user:gus" in page
    paused = admin_client_bob.get(f"{POLICIES}?paused__exact=1").content.decode()
    assert "user:ada" in paused and "user:gus" not in paused
    by_workspace = admin_client_bob.get(f"{POLICIES}?workspace__id__exact={globex.pk}")
    assert "user:gus" in by_workspace.content.decode()
    assert admin_client_bob.get(f"{POLICIES}?q=sleep").status_code == 200


def test_staff_add_a_policy_through_the_service(admin_client_bob):
    workspace = WorkspaceFactory()
    response = admin_client_bob.post(
        f"{POLICIES}add/", {"workspace": workspace.pk, "type": "sleep", "paused": "on"}
    )
    assert response.status_code == 302, response.content.decode()
    policy = JobTypePolicy.objects.get()
    assert (policy.type, policy.paused, policy.max_running) == ("sleep", True, None)
    assert policy.updated_by == "staff:bob"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"type": "echo"}, "Pause the type or set max_running"),
        ({"type": "nope", "paused": "on"}, "Select a valid choice"),
        ({"type": "echo", "max_running": "0"}, "greater than or equal to 1"),
        ({"type": "echo", "max_running": "1001"}, "less than or equal to 1000"),
    ],
)
def test_a_bad_form_writes_nothing(admin_client_bob, form, error):
    workspace = WorkspaceFactory()
    response = admin_client_bob.post(f"{POLICIES}add/", {"workspace": workspace.pk, **form})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not JobTypePolicy.objects.exists()


def test_a_second_policy_for_one_type_is_refused(admin_client_bob):
    workspace = WorkspaceFactory()
    job_type_policy_update(workspace=workspace, type="echo", actor="u", paused=True)
    response = admin_client_bob.post(
        f"{POLICIES}add/", {"workspace": workspace.pk, "type": "echo", "max_running": "2"}
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert JobTypePolicy.objects.get().max_running is None


def test_changing_max_running_rings_for_the_room_it_made(
    admin_client_bob, rung, django_capture_on_commit_callbacks
):
    workspace = WorkspaceFactory()
    policy = job_type_policy_update(workspace=workspace, type="echo", actor="u", max_running=1)
    for _ in range(3):
        job_in_state("queued", workspace=workspace)
    rung.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_bob.post(f"{POLICIES}{policy.pk}/change/", {"max_running": "2"})
    assert response.status_code == 302, response.content.decode()
    policy.refresh_from_db()
    assert (policy.max_running, policy.updated_by) == (2, "staff:bob")
    assert len(rung) == 2


def test_pause_and_resume_selected_types(
    admin_client_bob, rung, django_capture_on_commit_callbacks
):
    a, b = WorkspaceFactory(), WorkspaceFactory()
    ids = [
        job_type_policy_update(workspace=ws, type="echo", actor="u", max_running=5).pk
        for ws in (a, b)
    ]
    job_in_state("queued", workspace=a)
    rung.clear()
    paused = admin_client_bob.post(POLICIES, {"action": "pause", "_selected_action": ids})
    assert messages_of(paused) == ["Paused 2 job types."]
    assert set(JobTypePolicy.objects.values_list("paused", "updated_by")) == {(True, "staff:bob")}
    with django_capture_on_commit_callbacks(execute=True):
        resumed = admin_client_bob.post(POLICIES, {"action": "resume", "_selected_action": ids})
    assert messages_of(resumed)[-1] == "Resumed 2 job types."
    assert not JobTypePolicy.objects.filter(paused=True).exists()
    assert len(rung) == 1


def test_policies_are_not_deleted_here(admin_client_bob):
    policy = job_type_policy_update(
        workspace=WorkspaceFactory(), type="echo", actor="u", paused=True
    )
    assert admin_client_bob.get(f"{POLICIES}{policy.pk}/delete/").status_code == 403
