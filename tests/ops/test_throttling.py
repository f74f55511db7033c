"""The per-token quota: counted in Redis across processes, 429 past it, open if Redis is down."""

import pytest
from django.test import override_settings
from django.urls import path
from knox.models import AuthToken
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from config.redis_client import redis_client
from config.throttling import quota_parse
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


class Ping(APIView):
    def get(self, request):
        return Response({"ok": True})


class PublicPing(Ping):
    permission_classes = [AllowAny]


urlpatterns = [path("ping/", Ping.as_view()), path("public/", PublicPing.as_view())]


@pytest.fixture
def token_client():
    def make() -> APIClient:
        _, token = AuthToken.objects.create(UserFactory())
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client

    return make


@pytest.fixture(autouse=True)
def quota_keys_cleared():
    client = redis_client()
    for key in client.scan_iter("runner_jobs:quota:*"):
        client.delete(key)


@override_settings(ROOT_URLCONF=__name__, RUNNER_API_QUOTA="3/minute")
def test_quota_per_token(token_client):
    first, second = token_client(), token_client()
    assert [first.get("/ping/").status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = first.get("/ping/")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    # Another token has a quota of its own.
    assert second.get("/ping/").status_code == 200


@override_settings(ROOT_URLCONF=__name__, RUNNER_API_QUOTA="1/minute")
def test_session_users_are_counted_by_user(client):
    user = UserFactory()
    client.force_login(user)
    assert [client.get("/ping/").status_code for _ in range(2)] == [200, 429]


@override_settings(
    ROOT_URLCONF=__name__, RUNNER_API_QUOTA="1/minute", REDIS_URL="redis://127.0.0.1:6397/0"
)
def test_quota_is_not_enforced_while_redis_is_unreachable(token_client):
    client = token_client()
    assert [client.get("/ping/").status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [
        ("100000/hour", (100000, 3600)),
        ("5/s", (5, 1)),
        ("10/minute", (10, 60)),
        ("7/day", (7, 86400)),
    ],
)
def test_quota_parse(rate, parsed):
    assert quota_parse(rate) == parsed


@override_settings(ROOT_URLCONF=__name__, RUNNER_ANON_QUOTA="1/minute")
def test_anonymous_callers_are_counted_by_address(client):
    assert client.get("/public/", REMOTE_ADDR="10.0.0.1").status_code == 200
    assert client.get("/public/", REMOTE_ADDR="10.0.0.1").status_code == 429
    assert client.get("/public/", REMOTE_ADDR="10.0.0.2").status_code == 200
