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


# --- Requests without a valid credential, on the real API ---------------------------------------

JOBS = "/api/v1/runner-jobs/"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": "Token not-a-token"},
        {"HTTP_AUTHORIZATION": "Token \xff\xfe"},
        {"HTTP_X_API_KEY": "nope.nope"},
    ],
    ids=["no credential", "bad token", "token not UTF-8", "bad key on the consumer API"],
)
@override_settings(RUNNER_ANON_QUOTA="3/minute")
def test_requests_without_a_valid_credential_are_throttled_per_address(headers):
    client = APIClient()
    statuses = [client.get(JOBS, REMOTE_ADDR="10.0.0.1", **headers).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    refused = client.get(JOBS, REMOTE_ADDR="10.0.0.1", **headers)
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    # Another address has a quota of its own.
    assert client.get(JOBS, REMOTE_ADDR="10.0.0.2", **headers).status_code == 401


@override_settings(RUNNER_ANON_QUOTA="2/minute")
def test_bad_coordinator_keys_count_too():
    client = APIClient()
    url = "/api/v1/coordinator/health/"
    statuses = [
        client.get(url, REMOTE_ADDR="10.0.0.3", HTTP_X_API_KEY=f"bad.{n}").status_code
        for n in range(3)
    ]
    assert statuses == [401, 401, 429]


@override_settings(RUNNER_ANON_QUOTA="1/minute")
def test_a_valid_credential_from_a_throttled_address_is_served(token_client):
    anonymous = APIClient()
    assert [anonymous.get(JOBS, REMOTE_ADDR="10.0.0.4").status_code for _ in range(2)] == [401, 429]
    # A client with a token is counted by its token, not by the address it shares.
    assert token_client().get(JOBS, REMOTE_ADDR="10.0.0.4").status_code == 200


@override_settings(RUNNER_ANON_QUOTA="1/minute")
def test_an_ipv6_client_is_counted_by_its_64():
    client = APIClient()
    assert client.get(JOBS, REMOTE_ADDR="2001:db8:1:2::1").status_code == 401
    assert client.get(JOBS, REMOTE_ADDR="2001:db8:1:2:ffff::9").status_code == 429
    assert client.get(JOBS, REMOTE_ADDR="2001:db8:1:3::1").status_code == 401
