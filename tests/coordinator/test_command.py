from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from coordinator.models import CoordinatorKey
from tests.coordinator.conftest import BASE, key_client
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_coordinator_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_prints_the_key_alone_and_the_key_works():
    out, err = run("agents")
    raw = out.strip()
    assert out == raw + "\n" and "." in raw and err == ""
    key = CoordinatorKey.objects.get()
    # Every workspace, said outright: not the absence of workspace rows.
    assert (key.name, key.all_workspaces, list(key.workspaces.all())) == ("agents", True, [])
    response = key_client(raw).get(f"{BASE}/health/")
    assert response.json() == {"status": "ok", "key": "agents", "workspaces": None}


def test_workspaces_limit_the_key_and_missing_ones_are_made(workspace):
    out, err = run("scoped", "--workspace", "acme", "--workspace", "beta")
    assert err == "Created workspace 'beta'.\n"
    assert Workspace.objects.get(slug="beta").name == "beta"
    key = CoordinatorKey.objects.get()
    assert sorted(w.slug for w in key.workspaces.all()) == ["acme", "beta"]
    assert not key.all_workspaces
    response = key_client(out.strip()).get(f"{BASE}/health/")
    assert response.json()["workspaces"] == ["acme", "beta"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 51])
def test_refuses_a_bad_name(name):
    with pytest.raises(CommandError):
        run(name)
    assert CoordinatorKey.objects.count() == 0
