import pytest

from tests.api.conftest import other_workspace, token_client, viewer_client  # noqa: F401
from tests.execution.conftest import start_worker  # noqa: F401


@pytest.fixture
def client(member, user):
    """alice, a member of workspace acme."""
    return token_client(user)
