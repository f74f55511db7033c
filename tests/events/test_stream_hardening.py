"""Hostile and careless input on the event stream, over real HTTP (uvicorn): odd cursors and
header bytes are 4xx (never 500), a body is refused without being read, an open stream ends when
its credential or its reader's access goes, and one credential holds a bounded number of
streams (counted in Redis, so every web process shares the count)."""

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client
from knox.models import AuthToken

from config.redis_client import redis_client
from job_events.stream_access import SLOTS_KEY
from runner_jobs import services
from runner_jobs.models import RunnerJob
from tests.events.conftest import StreamThread, sse_read
from tests.events.test_stream import acme, stream_url
from tests.factories import MembershipFactory, UserFactory, job_in_state
from workspaces.models import Membership

pytestmark = pytest.mark.django_db(transaction=True)


def slots_key(token: str) -> str:
    digest = AuthToken.objects.get(token_key=token[:15]).digest
    return SLOTS_KEY.format(credential=f"token:{digest[:32]}")


def wait_until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ``str.isdigit`` accepts all of these; ``int`` refuses the first three and quietly reads the
# others (as 12 and 3).
UNICODE_DIGITS = ["¹", "³", "1²", "\uff11\uff12", "\u0663"]


@pytest.mark.parametrize("cursor", UNICODE_DIGITS)
def test_a_non_ascii_after_is_a_400_not_a_500(live_asgi, token, cursor):
    job = job_in_state("running", workspace=acme())
    result = sse_read(f"{stream_url(live_asgi, job)}?after={cursor}", token, timeout=10)
    assert result.status == 400
    assert result.headers["content-type"] == "application/json"
    assert json.loads(result.body)["code"] == "invalid"


@pytest.mark.parametrize("cursor", UNICODE_DIGITS)
def test_a_non_ascii_last_event_id_is_a_400_not_a_500(live_asgi, token, cursor):
    job = job_in_state("running", workspace=acme())
    # As a client sends it: UTF-8. (A byte that is not UTF-8 is refused before any view, by
    # the request guard, also with a 400.)
    result = sse_read(stream_url(live_asgi, job), token, headers={"Last-Event-ID": cursor.encode()})
    assert result.status == 400
    assert json.loads(result.body)["code"] == "invalid"
    latin1 = sse_read(stream_url(live_asgi, job), token, headers={"Last-Event-ID": b"\xb3"})
    assert latin1.status == 400


@pytest.mark.parametrize("header", [b"Token \xff", b"Bearer \xc3\x28", b"\xff", "Token é".encode()])
def test_a_non_utf8_authorization_header_is_a_401(live_asgi, token, header):
    job = job_in_state("running", workspace=acme())
    result = sse_read(stream_url(live_asgi, job), None, headers={"Authorization": header})
    assert result.status == 401
    assert json.loads(result.body)["code"] == "authentication_failed"


def raw_request(url: str, head: str, first_chunk: bytes) -> bytes:
    """Send ``head`` and the first chunk of a declared body, then read the answer without
    sending the rest: a server that waits for the whole body never answers."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(head.encode() + first_chunk)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


FORTY_MB = 40 * 1024 * 1024


@pytest.mark.parametrize(
    ("method", "length", "status"),
    [
        # Over DATA_UPLOAD_MAX_MEMORY_SIZE: the request guard, before any view.
        ("POST", FORTY_MB, 413),
        ("GET", FORTY_MB, 413),
        # Under it: the stream itself, which never reads a body either (config/asgi.py).
        ("POST", 400_000, 405),
        ("PUT", 400_000, 405),
        ("GET", 400_000, 413),
    ],
)
def test_a_body_is_refused_without_being_read(live_asgi, token, method, length, status):
    job = job_in_state("running", workspace=acme())
    path = urlsplit(stream_url(live_asgi, job)).path
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    started = time.monotonic()
    answer = raw_request(stream_url(live_asgi, job), head, b"x" * 65536)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert time.monotonic() - started < 5
    assert RunnerJob.objects.get(pk=job.pk).version == job.version  # nothing written


def test_a_post_answers_405_with_allow(live_asgi, token):
    import httpx

    job = job_in_state("running", workspace=acme())
    response = httpx.post(stream_url(live_asgi, job), headers={"Authorization": f"Token {token}"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["code"] == "method_not_allowed"


# --- Open streams re-check their credential and access ----------------------------------------


def revoke_token(token: str) -> None:
    AuthToken.objects.filter(token_key=token[:15]).delete()


def remove_membership(token: str) -> None:
    Membership.objects.filter(user__username="alice").delete()


def deactivate_user(token: str) -> None:
    User.objects.filter(username="alice").update(is_active=False)


@pytest.mark.parametrize("take_away", [revoke_token, remove_membership, deactivate_user])
def test_an_open_stream_ends_when_its_access_is_gone(live_asgi, token, settings, take_away):
    settings.RUNNER_STREAM_KEEPALIVE_SECONDS = 0.3
    job = job_in_state("running", workspace=acme())
    reader = StreamThread(stream_url(live_asgi, job), token, timeout=15)
    reader.start()
    wait_until(lambda: redis_client().zcard(slots_key(token)) == 1)
    services.event_append(job_id=job.pk, type="test.before", actor="w")
    time.sleep(0.5)
    take_away(token)
    gone_at = time.monotonic()
    result = reader.outcome(timeout=10)
    # Closed by the server within about one keep-alive, though the job is still running.
    assert time.monotonic() - gone_at < 3
    assert result.closed_by_server
    assert [e.event for e in result.events][-1] == "test.before"
    assert RunnerJob.objects.get(pk=job.pk).status == "running"


def test_a_session_stream_ends_at_logout(live_asgi, token, settings):
    settings.RUNNER_STREAM_KEEPALIVE_SECONDS = 0.3
    job = job_in_state("running", workspace=acme())
    client = Client()
    client.force_login(User.objects.get(username="alice"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    reader = StreamThread(stream_url(live_asgi, job), None, headers={"Cookie": cookie})
    reader.start()
    time.sleep(1)
    assert reader.is_alive()
    client.logout()
    result = reader.outcome(timeout=5)
    assert result.status == 200 and result.closed_by_server


# --- At most RUNNER_STREAM_MAX_PER_TOKEN streams per credential --------------------------------


def test_streams_past_the_cap_are_429_until_one_closes(live_asgi, token, settings):
    settings.RUNNER_STREAM_MAX_PER_TOKEN = 2
    running = job_in_state("running", workspace=acme())
    other = job_in_state("running", workspace=acme())
    key = slots_key(token)
    readers = [StreamThread(stream_url(live_asgi, running), token) for _ in range(2)]
    for reader in readers:
        reader.start()
    wait_until(lambda: redis_client().zcard(key) == 2)

    refused = sse_read(stream_url(live_asgi, other), token)
    assert refused.status == 429
    assert json.loads(refused.body)["code"] == "too_many_streams"
    assert int(refused.headers["retry-after"]) >= 1
    assert 0 < redis_client().ttl(key) <= 3 * settings.RUNNER_STREAM_KEEPALIVE_SECONDS + 1

    # Another credential of the same user is not counted against this one.
    second = AuthToken.objects.create(User.objects.get(username="alice"))[1]
    opened = sse_read(stream_url(live_asgi, other), second, stop_after=2)
    assert opened.status == 200

    services.job_complete(job_id=running.pk, result=None, actor="worker")
    for reader in readers:
        assert reader.outcome(timeout=10).closed_by_server
    wait_until(lambda: redis_client().zcard(key) == 0)
    assert sse_read(stream_url(live_asgi, other), token, stop_after=2).status == 200


def test_a_client_that_hangs_up_gives_its_slot_back(live_asgi, token, settings):
    settings.RUNNER_STREAM_MAX_PER_TOKEN = 1
    job = job_in_state("running", workspace=acme())
    key = slots_key(token)
    for _ in range(3):
        # Reads two events, hangs up; the server notices and frees the slot for the next one.
        assert sse_read(stream_url(live_asgi, job), token, stop_after=2).status == 200
        wait_until(lambda: redis_client().zcard(key) == 0)


def test_slots_of_a_dead_process_lapse(live_asgi, token, settings):
    """A web process killed with streams open never gives their slots back: they stop counting
    once their lease (three keep-alives) has run out."""
    settings.RUNNER_STREAM_MAX_PER_TOKEN = 2
    job = job_in_state("running", workspace=acme())
    key = slots_key(token)
    now = time.time()
    redis_client().zadd(key, {"dead-1": now - 1, "dead-2": now - 30})
    assert sse_read(stream_url(live_asgi, job), token, stop_after=1).status == 200
    # Leases still running count.
    redis_client().zadd(key, {"alive-1": now + 60, "alive-2": now + 60})
    assert sse_read(stream_url(live_asgi, job), token).status == 429
    redis_client().delete(key)


def test_without_redis_the_cap_is_not_enforced(live_asgi, token, settings):
    settings.RUNNER_STREAM_MAX_PER_TOKEN = 1
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    job = job_in_state("completed", workspace=acme())
    for _ in range(2):
        assert sse_read(stream_url(live_asgi, job), token).status == 200


def test_the_cap_counts_per_credential_not_per_user(live_asgi, token, settings):
    settings.RUNNER_STREAM_MAX_PER_TOKEN = 1
    bob = UserFactory(username="bob")
    MembershipFactory(user=bob, workspace=acme(), role="viewer")
    bobs = AuthToken.objects.create(bob)[1]
    job = job_in_state("running", workspace=acme())
    alice_reader = StreamThread(stream_url(live_asgi, job), token)
    alice_reader.start()
    wait_until(lambda: redis_client().zcard(slots_key(token)) == 1)
    assert sse_read(stream_url(live_asgi, job), bobs, stop_after=1).status == 200
    services.job_complete(job_id=job.pk, result=None, actor="worker")
    alice_reader.outcome()
