"""Workspaces, memberships and API tokens in the admin; token secrets are never shown again."""

import pytest
from django.contrib.messages import get_messages
from knox.models import AuthToken

from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db

TOKENS = "/admin/knox/authtoken/"


def test_workspace_and_membership_pages(admin_client_bob):
    membership = MembershipFactory(workspace=WorkspaceFactory(slug="acme"), role="viewer")
    assert admin_client_bob.get("/admin/workspaces/workspace/").status_code == 200
    page = admin_client_bob.get(f"/admin/workspaces/workspace/{membership.workspace_id}/change/")
    assert page.status_code == 200
    assert membership.user.username in page.content.decode()
    listing = admin_client_bob.get("/admin/workspaces/membership/", {"role__exact": "viewer"})
    assert list(listing.context["cl"].result_list) == [membership]


def test_token_list_never_shows_the_digest(admin_client_bob):
    instance, token = AuthToken.objects.create(user=UserFactory(username="api-user"))
    body = admin_client_bob.get(TOKENS).content.decode()
    assert instance.token_key in body
    assert "api-user" in body
    # The digest is the row's primary key (the value of its checkbox, a one-way SHA-512 that
    # authenticates nothing) but never a column; the token itself is nowhere.
    assert 'class="field-digest"' not in body
    assert token not in body
    assert "delete_selected" not in body
    assert admin_client_bob.get(f"{TOKENS}{instance.digest}/change/").status_code == 403


def test_a_new_token_is_shown_once(admin_client_bob):
    user = UserFactory(username="api-user")
    response = admin_client_bob.post(f"{TOKENS}add/", {"user": user.pk, "expiry": ""})
    assert response.status_code == 302
    assert response["Location"] == TOKENS
    instance = AuthToken.objects.get(user=user)
    [message] = [m.message for m in get_messages(response.wsgi_request)]
    token = message.split(": ")[1].split(" ")[0]
    assert token.startswith(instance.token_key)
    assert len(token) == 64
    assert instance.digest not in message
    # Shown on the page after creating it, then never again.
    assert token in admin_client_bob.get(TOKENS).content.decode()
    assert token not in admin_client_bob.get(TOKENS).content.decode()


def test_revoke_selected_tokens(admin_client_bob):
    keep, _ = AuthToken.objects.create(user=UserFactory(username="keep"))
    revoke, _ = AuthToken.objects.create(user=UserFactory(username="revoke"))
    response = admin_client_bob.post(
        TOKENS, {"action": "revoke_selected", "_selected_action": [revoke.pk], "index": 0}
    )
    assert [m.message for m in get_messages(response.wsgi_request)] == ["Revoked 1 tokens."]
    assert list(AuthToken.objects.values_list("pk", flat=True)) == [keep.pk]
