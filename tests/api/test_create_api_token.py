"""python manage.py create_api_token: prints the token alone, which then authenticates."""

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from knox.models import AuthToken
from rest_framework.test import APIClient

from workspaces.models import Membership, Workspace

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("create_api_token", *args, stdout=out)
    return out.getvalue()


def test_creates_user_workspace_membership_and_prints_only_the_token():
    out = run("carol", "--workspace", "acme", "--role", "viewer")
    token = out.strip()
    assert out == token + "\n"
    assert len(token) >= 64 and " " not in token
    user = User.objects.get(username="carol")
    assert not user.has_usable_password()
    assert Workspace.objects.get(slug="acme").name == "acme"
    assert Membership.objects.get(user=user).role == "viewer"
    # Stored hashed: the token itself is nowhere in the table.
    assert not AuthToken.objects.filter(digest=token).exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/runner-jobs/").status_code == 200


def test_default_role_is_member_and_a_second_call_makes_a_second_token():
    first = run("dan", "--workspace", "acme").strip()
    second = run("dan", "--workspace", "acme").strip()
    assert first != second
    assert Membership.objects.get(user__username="dan").role == "member"
    assert User.objects.filter(username="dan").count() == 1
    assert AuthToken.objects.filter(user__username="dan").count() == 2


def test_role_changes_an_existing_membership():
    run("erin", "--workspace", "acme", "--role", "viewer")
    run("erin", "--workspace", "acme", "--role", "admin")
    assert Membership.objects.get(user__username="erin").role == "admin"
    run("erin", "--workspace", "acme")
    assert Membership.objects.get(user__username="erin").role == "admin"


def test_without_workspace_only_the_user_and_token():
    token = run("frank").strip()
    assert not Membership.objects.filter(user__username="frank").exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/runner-jobs/").json()["results"] == []


def test_role_needs_workspace():
    with pytest.raises(CommandError, match="--role needs --workspace"):
        run("gina", "--role", "admin")
    assert not User.objects.filter(username="gina").exists()


def test_bad_workspace_slug_is_refused():
    with pytest.raises(CommandError, match="--workspace"):
        run("hal", "--workspace", "not a slug")
    assert not User.objects.filter(username="hal").exists()


def test_unknown_role_is_refused():
    with pytest.raises(CommandError):
        run("ivy", "--workspace", "acme", "--role", "owner")


def test_bad_token_is_a_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 64)
    response = client.get("/api/v1/runner-jobs/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
