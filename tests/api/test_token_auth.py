"""Consumer tokens: knox's authentication without its per-request sweep of expired tokens while
tokens cannot expire, and knox's own behaviour as soon as they can."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

URL = "/api/v1/runner-jobs/"
pytestmark = pytest.mark.django_db


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def auth_queries(token: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client_with(token).get(URL).status_code == 200
    return [q["sql"] for q in captured.captured_queries if "knox_authtoken" in q["sql"]]


def test_without_a_ttl_a_request_reads_its_token_once(user, member):
    _, token = AuthToken.objects.create(user)
    AuthToken.objects.create(user)
    assert len(auth_queries(token)) == 1


def test_with_a_ttl_expired_tokens_are_swept_and_refused_as_knox_does(user, member, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": timedelta(hours=1)}
    _, token = AuthToken.objects.create(user)
    expired, expired_token = AuthToken.objects.create(user)
    AuthToken.objects.filter(pk=expired.pk).update(expiry=timezone.now() - timedelta(seconds=1))

    # The token, the sweep of the user's tokens, the delete of the expired one.
    assert len(auth_queries(token)) == 3
    assert not AuthToken.objects.filter(pk=expired.pk).exists()
    assert client_with(expired_token).get(URL).status_code == 401


def test_without_a_ttl_a_token_given_an_expiry_still_expires(user, member):
    _, token = AuthToken.objects.create(user, expiry=timedelta(hours=1))
    assert client_with(token).get(URL).status_code == 200
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    assert client_with(token).get(URL).status_code == 401
    assert not AuthToken.objects.exists()


def test_a_wrong_token_and_an_inactive_user_are_refused(member, user):
    _, token = AuthToken.objects.create(user)
    assert client_with(token[:-1] + ("a" if token[-1] != "a" else "b")).get(URL).status_code == 401
    user.is_active = False
    user.save()
    assert client_with(token).get(URL).status_code == 401
