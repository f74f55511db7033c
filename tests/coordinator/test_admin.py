import pytest
from django.contrib import admin

from coordinator.models import CoordinatorKey
from tests.coordinator.conftest import BASE, key_client, make_key
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/coordinator/coordinatorkey/"


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_only_coordinator_keys_are_in_the_admin():
    registered = {model._meta.label for model in admin.site._registry}
    assert "coordinator.CoordinatorKey" in registered
    assert "rest_framework_api_key.APIKey" not in registered


def test_add_shows_the_key_once_and_it_works(staff_client, workspace):
    response = staff_client.post(
        f"{CHANGELIST}add/", {"name": "from-admin", "workspaces": [workspace.pk]}, follow=True
    )
    assert response.status_code == 200
    (message,) = [str(m) for m in response.context["messages"] if "is: " in str(m)]
    raw = message.split("is: ")[1].split(". ")[0]
    key = CoordinatorKey.objects.get()
    assert list(key.workspaces.all()) == [workspace]
    assert key_client(raw).get(f"{BASE}/health/").json()["workspaces"] == ["acme"]


def test_changelist_shows_scope_and_revoke_action_revokes(staff_client, workspace):
    raw = make_key("scoped", [workspace])
    make_key("everywhere")
    response = staff_client.get(CHANGELIST)
    assert response.status_code == 200
    assert b"acme" in response.content and b"all" in response.content
    ids = list(CoordinatorKey.objects.values_list("pk", flat=True))
    response = staff_client.post(
        CHANGELIST, {"action": "revoke_keys", "_selected_action": ids}, follow=True
    )
    assert "Revoked 2 key(s)." in [str(m) for m in response.context["messages"]]
    assert set(CoordinatorKey.objects.values_list("revoked", flat=True)) == {True}
    assert key_client(raw).get(f"{BASE}/health/").status_code == 401
