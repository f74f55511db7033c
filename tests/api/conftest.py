import pytest
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory


def token_client(user) -> APIClient:
    """An API client that authenticates as ``user`` with a real knox token, as a consumer does."""
    _, token = AuthToken.objects.create(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def client(member, user) -> APIClient:
    """alice, a member of workspace acme."""
    return token_client(user)


@pytest.fixture
def other_workspace(db):
    return WorkspaceFactory(slug="globex")


@pytest.fixture
def viewer_client(workspace) -> APIClient:
    viewer = UserFactory(username="vera")
    MembershipFactory(user=viewer, workspace=workspace, role="viewer")
    return token_client(viewer)
