"""A coordinator key's scope cannot widen: "every workspace" is a property of the key, so a key
limited to workspaces that are all deleted sees nothing, instead of everything."""

import importlib
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from coordinator.models import CoordinatorKey
from runner_jobs.models import JobStatus, RunnerJob
from tests.coordinator.conftest import BASE, key_client, make_key
from tests.coordinator.test_api import agent_job, unchanged
from tests.factories import UserFactory, WorkspaceFactory
from workspaces.models import Workspace


@pytest.mark.django_db
def test_a_key_whose_workspaces_are_all_deleted_sees_nothing():
    doomed = Workspace.objects.create(slug="wstmp", name="tmp")
    client = key_client(make_key("scoped", [doomed]))
    other = agent_job(workspace=WorkspaceFactory(slug="globex"))
    doomed.delete()
    assert not CoordinatorKey.objects.get().workspaces.exists()

    assert client.get(f"{BASE}/health/").json()["workspaces"] == []
    assert client.get(f"{BASE}/jobs/{other.pk}/").status_code == 404
    claim = {"types": ["agent-task"], "worker": "w", "limit": 10}
    response = client.post(f"{BASE}/jobs/claim/", claim, format="json")
    assert (response.status_code, response.json()) == (200, {"jobs": []})
    for path, body in [
        ("status/", {"status": "running"}),
        ("progress/", {"progress": 10}),
        ("fail/", {"error": "x"}),
    ]:
        assert client.post(f"{BASE}/jobs/{other.pk}/{path}", body, format="json").status_code == 404
    created = client.post(
        f"{BASE}/jobs/", {"workspace": "globex", "type": "agent-task"}, format="json"
    )
    assert created.status_code == 400 and "workspace" in created.json()
    unchanged(other)
    assert other.status == JobStatus.QUEUED and RunnerJob.objects.count() == 1


@pytest.mark.django_db
def test_a_key_of_every_workspace_says_so_and_sees_new_ones():
    client = key_client(make_key("everywhere"))
    assert CoordinatorKey.objects.get().all_workspaces
    job = agent_job(workspace=WorkspaceFactory(slug="born-later"))
    assert client.get(f"{BASE}/health/").json()["workspaces"] is None
    assert client.get(f"{BASE}/jobs/{job.pk}/").status_code == 200


@pytest.mark.django_db
def test_a_limited_key_keeps_its_remaining_workspaces():
    kept = Workspace.objects.create(slug="kept", name="kept")
    gone = Workspace.objects.create(slug="gone", name="gone")
    client = key_client(make_key("scoped", [kept, gone]))
    mine, theirs = agent_job(workspace=kept), agent_job(workspace=WorkspaceFactory(slug="x"))
    gone.delete()
    assert client.get(f"{BASE}/health/").json()["workspaces"] == ["kept"]
    assert client.get(f"{BASE}/jobs/{mine.pk}/").status_code == 200
    assert client.get(f"{BASE}/jobs/{theirs.pk}/").status_code == 404


# --- The admin and the command say the scope outright -----------------------------------------

ADD = "/admin/coordinator/coordinatorkey/add/"


@pytest.fixture
def staff_client(client: Any) -> Any:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"name": "vague"}, "Choose the workspaces this key may touch"),
        ({"name": "both", "all_workspaces": "on", "workspaces": ["W"]}, "lists none"),
    ],
)
def test_the_admin_refuses_a_key_without_a_clear_scope(staff_client, workspace, form, error):
    form = {k: [workspace.pk] if v == ["W"] else v for k, v in form.items()}
    response = staff_client.post(ADD, form)
    assert response.status_code == 200  # the form again
    assert error in response.content.decode()
    assert not CoordinatorKey.objects.exists()


@pytest.mark.django_db
def test_the_admin_makes_a_key_of_every_workspace(staff_client):
    response = staff_client.post(ADD, {"name": "ops", "all_workspaces": "on"}, follow=True)
    assert response.status_code == 200
    assert CoordinatorKey.objects.get().all_workspaces
    changelist = staff_client.get("/admin/coordinator/coordinatorkey/").content.decode()
    assert ">all<" in changelist


@pytest.mark.django_db
def test_the_admin_shows_a_key_left_without_workspaces(staff_client):
    doomed = Workspace.objects.create(slug="wstmp", name="tmp")
    make_key("orphan", [doomed])
    doomed.delete()
    changelist = staff_client.get("/admin/coordinator/coordinatorkey/").content.decode()
    assert "none (sees nothing)" in changelist


# --- Keys made before the flag keep their meaning ---------------------------------------------

BEFORE = [("coordinator", "0001_create_coordinator_key")]


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_keys_without_workspaces_unlimited_in_batches(monkeypatch):
    data_migration = importlib.import_module(
        "coordinator.migrations.0003_existing_unlimited_keys_keep_every_workspace"
    )
    monkeypatch.setattr(data_migration, "BATCH_SIZE", 2)
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("coordinator")
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    old_key = old.get_model("coordinator", "CoordinatorKey")
    workspace = old.get_model("workspaces", "Workspace").objects.create(slug="acme", name="acme")
    for n in range(5):
        key = old_key.objects.create(id=f"k{n}", prefix=f"p{n}", hashed_key="h", name=f"key{n}")
        if n % 2:
            key.workspaces.add(workspace)

    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    flags = dict(CoordinatorKey.objects.values_list("pk", "all_workspaces"))
    assert flags == {"k0": True, "k1": False, "k2": True, "k3": False, "k4": True}
    assert list(CoordinatorKey.objects.get(pk="k1").workspaces.all()) == [
        Workspace.objects.get(slug="acme")
    ]
