import pytest

from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory


@pytest.fixture
def workspace(db):
    return WorkspaceFactory(slug="acme")


@pytest.fixture
def user(db):
    return UserFactory(username="alice")


@pytest.fixture
def member(user, workspace):
    return MembershipFactory(user=user, workspace=workspace, role="member")
