"""Scoped read tokens (SPEC §11): made by anyone who reads the job, they read that one job's
detail, events and stream, as a Bearer header or ``?access_token=``, and nothing else; tampered,
expired, another job's, used to write, or whose creator left the workspace: 401, nothing
changes. The stream is served over real HTTP (uvicorn); the rest in-process."""

import datetime as dt
import json
import logging

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from config.logging import AccessTokenScrubber, url_scrub
from runner_jobs import read_tokens
from runner_jobs.models import RunnerJob
from tests.events.conftest import sse_read
from tests.events.test_stream import acme, received, stored_events, stream_url
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory, job_in_state
from workspaces.models import Membership

pytestmark = pytest.mark.django_db(transaction=True)


def client_of(token: str | None = None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def make_read_token(token: str, job: RunnerJob, **body: object) -> str:
    response = client_of(token).post(
        f"/api/v1/runner-jobs/{job.pk}/read-token/", body, format="json"
    )
    assert response.status_code == 201, response.content
    return str(response.json()["token"])


def bearer(read_token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_token}")
    return client


def job_url(job: RunnerJob, suffix: str = "") -> str:
    return f"/api/v1/runner-jobs/{job.pk}/{suffix}"


def snapshot(job: RunnerJob) -> tuple[str, int, int]:
    job.refresh_from_db()
    return job.status, job.version, RunnerJob.objects.count()


# --- Making one ---------------------------------------------------------------------------------


def test_a_member_makes_a_token_that_expires_in_900_seconds_by_default(token):
    job = job_in_state("running", workspace=acme())
    before = snapshot(job)
    response = client_of(token).post(job_url(job, "read-token/"))
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"token", "expires_at"}
    expires_at = dt.datetime.fromisoformat(body["expires_at"])
    assert abs((expires_at - timezone.now()).total_seconds() - 900) < 5
    assert snapshot(job) == before  # no row, no event, no version bump


def test_a_viewer_may_make_one_and_choose_its_lifetime(token):
    viewer = UserFactory(username="vera")
    MembershipFactory(user=viewer, workspace=acme(), role="viewer")
    job = job_in_state("queued", workspace=acme())
    response = client_of(AuthToken.objects.create(viewer)[1]).post(
        job_url(job, "read-token/"), {"ttl_seconds": 60}, format="json"
    )
    assert response.status_code == 201
    expires_at = dt.datetime.fromisoformat(response.json()["expires_at"])
    assert abs((expires_at - timezone.now()).total_seconds() - 60) < 5


@pytest.mark.parametrize("ttl", [86_401, 10**9, 0, -5, "soon", None, 1.5])
def test_a_bad_ttl_is_a_400(token, ttl):
    job = job_in_state("running", workspace=acme())
    response = client_of(token).post(job_url(job, "read-token/"), {"ttl_seconds": ttl}, "json")
    assert response.status_code == 400
    assert "ttl_seconds" in response.json()


def test_the_longest_ttl_is_a_day(token):
    job = job_in_state("running", workspace=acme())
    assert make_read_token(token, job, ttl_seconds=86_400)


def test_making_one_needs_credentials_and_access_to_the_job(token):
    job = job_in_state("running", workspace=acme())
    foreign = job_in_state("running", workspace=WorkspaceFactory(slug="globex"))
    assert client_of().post(job_url(job, "read-token/")).status_code == 401
    assert client_of(token).post(job_url(foreign, "read-token/")).status_code == 404
    # A read token cannot make another one (or anything else).
    read_token = make_read_token(token, job)
    assert bearer(read_token).post(job_url(job, "read-token/")).status_code == 401


# --- Using one ----------------------------------------------------------------------------------


def test_it_reads_the_jobs_detail_and_events_as_bearer_or_query(token):
    job = job_in_state("completed", workspace=acme())
    read_token = make_read_token(token, job)
    anonymous = APIClient()
    for client, query in ((bearer(read_token), ""), (anonymous, f"?access_token={read_token}")):
        detail = client.get(job_url(job) + query)
        assert detail.status_code == 200
        assert detail.json()["id"] == str(job.pk)
        assert detail["ETag"] == f'"{job.version}"'
        events = client.get(job_url(job, "events/") + query)
        assert events.status_code == 200
        assert [e["id"] for e in events.json()["results"]] == [i for i, _ in stored_events(job)]


def test_it_opens_the_jobs_stream_with_no_other_credential(live_asgi, token):
    job = job_in_state("completed", workspace=acme())
    read_token = make_read_token(token, job)
    by_query = sse_read(f"{stream_url(live_asgi, job)}?access_token={read_token}", None)
    assert by_query.status == 200
    assert received(by_query.events) == stored_events(job)
    by_header = sse_read(
        stream_url(live_asgi, job), None, headers={"Authorization": f"Bearer {read_token}"}
    )
    assert received(by_header.events) == stored_events(job)
    # Then, like any reader at the end: 204.
    last = str(by_query.events[-1].id)
    url = f"{stream_url(live_asgi, job)}?access_token={read_token}"
    assert sse_read(url, None, headers={"Last-Event-ID": last}).status == 204


def tampered(read_token: str) -> str:
    value, _, signature = read_token.rpartition(":")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{value}:{flipped}"


def forged_claims(job: RunnerJob, token: str, *, expires_in: int) -> str:
    """A genuine signature over claims of our choosing: what an old token looks like."""
    alice = User.objects.get(username="alice")
    expiry = int(timezone.now().timestamp()) + expires_in
    claims = {"j": str(job.pk), "u": alice.pk, "e": expiry}
    return signing.Signer(salt=read_tokens.SALT).sign_object(claims)


def expired(job: RunnerJob, token: str) -> str:
    return forged_claims(job, token, expires_in=-1)


def other_salt(job: RunnerJob, token: str) -> str:
    alice = User.objects.get(username="alice")
    return signing.Signer(salt="another.purpose").sign_object(
        {"j": str(job.pk), "u": alice.pk, "e": int(timezone.now().timestamp()) + 600}
    )


BAD_TOKENS = {
    "tampered": lambda job, token: tampered(make_read_token(token, job)),
    "expired": expired,
    "another salt": other_salt,
    "garbage": lambda job, token: "not-a-token",
    "another job's": lambda job, token: make_read_token(
        token, job_in_state("completed", workspace=acme())
    ),
    "knox token as bearer": lambda job, token: token,
}


@pytest.mark.parametrize("bad", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_token_is_a_401_everywhere(live_asgi, token, bad):
    job = job_in_state("completed", workspace=acme())
    read_token = bad(job, token)
    for path in (job_url(job), job_url(job, "events/")):
        assert bearer(read_token).get(path).status_code == 401, path
        assert APIClient().get(f"{path}?access_token={read_token}").status_code == 401, path
    result = sse_read(f"{stream_url(live_asgi, job)}?access_token={read_token}", None)
    assert result.status == 401
    assert json.loads(result.body)["code"] == "authentication_failed"


def test_it_opens_nothing_else_and_writes_nothing(token):
    job = job_in_state("running", workspace=acme())
    read_token = make_read_token(token, job)
    before = snapshot(job)
    query = f"?access_token={read_token}"
    for client, suffix in ((bearer(read_token), ""), (APIClient(), query)):
        assert client.get("/api/v1/runner-jobs/" + suffix).status_code == 401
        assert client.post(job_url(job, "cancel/") + suffix).status_code == 401
        assert client.post(job_url(job, "retry/") + suffix).status_code == 401
        created = client.post(
            "/api/v1/runner-jobs/" + suffix,
            {"workspace": "acme", "type": "echo", "payload": {}},
            format="json",
        )
        assert created.status_code == 401
        assert client.get("/api/v1/webhooks/" + suffix).status_code == 401
    assert snapshot(job) == before


@pytest.mark.parametrize("take_away", ["membership", "deactivate"])
def test_it_stops_working_when_its_creator_loses_access(live_asgi, token, take_away):
    job = job_in_state("completed", workspace=acme())
    read_token = make_read_token(token, job)
    assert bearer(read_token).get(job_url(job)).status_code == 200
    if take_away == "membership":
        Membership.objects.filter(user__username="alice").delete()
    else:
        User.objects.filter(username="alice").update(is_active=False)
    assert bearer(read_token).get(job_url(job)).status_code == 401
    assert bearer(read_token).get(job_url(job, "events/")).status_code == 401
    result = sse_read(f"{stream_url(live_asgi, job)}?access_token={read_token}", None)
    assert result.status == 401


def test_an_open_stream_ends_when_its_read_token_expires(live_asgi, token, settings):
    settings.RUNNER_STREAM_KEEPALIVE_SECONDS = 0.3
    job = job_in_state("running", workspace=acme())
    read_token = forged_claims(job, token, expires_in=2)
    url = f"{stream_url(live_asgi, job)}?access_token={read_token}"
    result = sse_read(url, None, timeout=10)
    assert result.status == 200 and result.closed_by_server
    assert [e.event for e in result.events] == ["job.created", "job.queued", "job.started"]
    assert sse_read(url, None).status == 401


# --- Out of the logs ----------------------------------------------------------------------------


def test_access_tokens_are_scrubbed_from_access_log_lines(caplog):
    url = "/api/v1/runner-jobs/x/events/stream/?after=3&access_token=abc.DEF:ghi&x=1"
    assert (
        url_scrub(url) == "/api/v1/runner-jobs/x/events/stream/?after=3&access_token=[redacted]&x=1"
    )
    assert (
        url_scrub("GET /p?access_token=secret HTTP/1.1")
        == "GET /p?access_token=[redacted] HTTP/1.1"
    )
    for name in ("uvicorn.access", "gunicorn.access", "django.server"):
        assert any(isinstance(f, AccessTokenScrubber) for f in logging.getLogger(name).filters)
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        # uvicorn's own access line: the URL is an argument.
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", url, "1.1", 200
        )
    assert "abc.DEF:ghi" not in caplog.text
    assert "access_token=[redacted]" in caplog.text


def test_the_request_log_never_carries_the_query_string(token, caplog):
    job = job_in_state("completed", workspace=acme())
    read_token = make_read_token(token, job)
    with caplog.at_level(logging.INFO):
        assert APIClient().get(f"{job_url(job)}?access_token={read_token}").status_code == 200
    logged = " ".join(str(r.msg) + r.getMessage() for r in caplog.records)
    assert "request_finished" in logged
    assert read_token not in logged
    assert read_token.split(":")[-1] not in logged


# --- In the schema ------------------------------------------------------------------------------


def test_the_schema_documents_read_tokens_and_the_stream():
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    paths = schema["paths"]
    make = paths["/api/v1/runner-jobs/{id}/read-token/"]["post"]
    assert {"201", "400", "401", "404", "413"} <= set(make["responses"])
    assert {"readTokenBearer": []} not in make["security"]
    for path in ("/api/v1/runner-jobs/{id}/", "/api/v1/runner-jobs/{id}/events/"):
        assert {"readTokenQuery": []} in paths[path]["get"]["security"]
    assert {"readTokenBearer": []} not in paths["/api/v1/runner-jobs/"]["get"]["security"]
    stream = paths["/api/v1/runner-jobs/{id}/events/stream/"]["get"]
    assert set(stream["responses"]) == {
        *("200", "204", "400", "401", "404", "405", "413", "429", "500", "503")
    }
    assert "text/event-stream" in stream["responses"]["200"]["content"]
