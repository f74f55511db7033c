from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from coordinator.models import CoordinatorKey
from workspaces.models import Workspace

BASE = "/api/v1/coordinator"


def make_key(name: str = "agents", workspaces: list[Workspace] | None = None) -> str:
    """A key of ``workspaces``; without them, a key of every workspace."""
    key, raw = CoordinatorKey.objects.create_key(name=name, all_workspaces=workspaces is None)
    key.workspaces.set(workspaces or [])
    return raw


def key_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw_key)
    return client


@pytest.fixture
def coordinator(db) -> APIClient:
    """A client holding a key of every workspace, named ``agents``."""
    return key_client(make_key())


@pytest.fixture
def post(coordinator: APIClient) -> Callable[..., Any]:
    def _post(path: str, body: dict[str, Any] | None = None) -> Any:
        return coordinator.post(f"{BASE}/{path}", body or {}, format="json")

    return _post
