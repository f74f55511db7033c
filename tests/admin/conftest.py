import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tests.factories import UserFactory


def staff_client(username: str, *perms: str, superuser: bool = False) -> Client:
    user = UserFactory(username=username, is_staff=True, is_superuser=superuser)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client_bob(db) -> Client:
    """A superuser: may view and act."""
    return staff_client("bob", superuser=True)


@pytest.fixture
def viewer_client(db) -> Client:
    """Staff who may view jobs and events but not change (cancel/retry) them."""
    return staff_client("vera", "view_runnerjob", "view_jobevent", "view_jobstep")


@pytest.fixture
def non_staff_client(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username="nora", is_staff=False))
    return client
