"""A web process remembers a checked token or coordinator key for RUNNER_AUTH_CACHE_SECONDS: no
credential query on the next requests, and a revoked one is refused once that time has passed."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from knox.models import AuthToken
from rest_framework.test import APIClient

from coordinator.authentication import checked_keys
from coordinator.models import CoordinatorKey
from tests.coordinator.conftest import BASE, key_client, make_key
from tests.factories import MembershipFactory
from workspaces.authentication import verified_tokens_forget

pytestmark = pytest.mark.django_db


def token_queries(captured: CaptureQueriesContext) -> int:
    return sum("knox_authtoken" in q["sql"] for q in captured.captured_queries)


def test_checked_token_is_remembered_then_revocation_applies(settings, member):
    settings.RUNNER_AUTH_CACHE_SECONDS = 0.3
    verified_tokens_forget()
    row, token = AuthToken.objects.create(member.user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/runner-jobs/").status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/api/v1/runner-jobs/").status_code == 200
    assert token_queries(captured) == 0
    row.delete()
    time.sleep(0.35)
    assert client.get("/api/v1/runner-jobs/").status_code == 401


def test_no_memory_with_zero_seconds(settings):
    settings.RUNNER_AUTH_CACHE_SECONDS = 0
    member = MembershipFactory()
    row, token = AuthToken.objects.create(member.user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/runner-jobs/").status_code == 200
    row.delete()
    assert client.get("/api/v1/runner-jobs/").status_code == 401


def test_a_checked_coordinator_key_is_remembered_then_revocation_applies(settings):
    settings.RUNNER_AUTH_CACHE_SECONDS = 0.3
    checked_keys.forget()
    client = key_client(make_key())
    assert client.get(f"{BASE}/health/").status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert client.get(f"{BASE}/health/").status_code == 200
    assert not any("coordinator_coordinatorkey" in q["sql"] for q in captured.captured_queries)
    CoordinatorKey.objects.update(revoked=True)
    time.sleep(0.35)
    assert client.get(f"{BASE}/health/").status_code == 401
