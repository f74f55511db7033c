"""Request bodies are bounded before they are read, on every path: over
``DATA_UPLOAD_MAX_MEMORY_SIZE`` by Content-Length is a 413 (JSON) sent while the client is still
sending, and a chunked body (no length to check) is a 411."""

import socket
import time

import pytest
from django.conf import settings
from django.test import Client

from runner_jobs.models import RunnerJob
from tests.events.conftest import live_asgi  # noqa: F401  (the project's ASGI app on uvicorn)

FORTY_MB = 40 * 1024 * 1024

POST_URLS = [
    "/api/v1/runner-jobs/",
    "/api/v1/coordinator/jobs/",
    "/api/v1/coordinator/jobs/claim/",
    "/api/v1/webhooks/",
    "/api/v1/nowhere/",
    "/admin/login/",
]


class UnreadBody:
    """A request body that records whether anyone read it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = min(self.size - self.read_bytes, size if size >= 0 else self.size)
        self.read_bytes += chunk
        return b"x" * chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


@pytest.mark.django_db
@pytest.mark.parametrize("url", POST_URLS)
def test_a_40_mb_body_is_413_before_a_byte_is_read(url, client, member):
    body = UnreadBody(FORTY_MB)
    response = Client().generic(
        "POST",
        url,
        content_type="application/json",
        CONTENT_LENGTH=str(FORTY_MB),
        **{"wsgi.input": body},
    )
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
        "code": "request_too_large",
    }
    assert body.read_bytes == 0
    assert not RunnerJob.objects.exists()


@pytest.mark.django_db
def test_a_body_at_the_limit_is_read(client):
    """The limit is the limit: a body of exactly that size gets through to the parser."""
    pad = " " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - 60)
    body = '{"workspace": "acme", "type": "echo", "payload": {}}' + pad
    body = body + " " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - len(body))
    response = client.post("/api/v1/runner-jobs/", body, content_type="application/json")
    assert response.status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "²"])
def test_a_content_length_that_is_not_a_number_is_400(client, length):
    response = client.generic(
        "POST", "/api/v1/runner-jobs/", b"{}", "application/json", CONTENT_LENGTH=length
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


@pytest.mark.django_db
@pytest.mark.parametrize("url", POST_URLS)
def test_a_chunked_body_is_411(url, client):
    response = client.generic(
        "POST",
        url,
        b"",
        "application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert response.status_code == 411
    assert response.json()["code"] == "length_required"
    assert not RunnerJob.objects.exists()


def _raw_exchange(base_url: str, head: bytes, body_part: bytes) -> bytes:
    """Send ``head`` and the start of a body, then read the answer (to its end, or until the
    server closes) without sending the rest."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + body_part)
        answer = b""
        deadline = time.monotonic() + 10
        while not answer.endswith(b"\r\n0\r\n\r\n"):
            assert time.monotonic() < deadline, answer
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_over_http_the_413_comes_while_the_body_is_still_being_sent(live_asgi):  # noqa: F811
    head = (
        b"POST /api/v1/runner-jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % FORTY_MB
    )
    answer = _raw_exchange(live_asgi, head, b"x" * 65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"code": "request_too_large"}' in answer


def test_over_http_a_chunked_body_is_411(live_asgi):  # noqa: F811
    head = (
        b"POST /api/v1/runner-jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = _raw_exchange(live_asgi, head, b"10000\r\n" + b"x" * 65536)
    assert answer.startswith(b"HTTP/1.1 411 "), answer[:200]
    assert b'"code": "length_required"}' in answer
