"""A real ASGI server (uvicorn, in a thread of the test process, on the test database) and a
small Server-Sent Events client, so streams are tested over HTTP as a user's client sees them."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from knox.models import AuthToken

from config.asgi import application as web_application
from tests.events.webhooks import admin_user, receiver  # noqa: F401  (webhook fixtures)
from tests.execution.conftest import start_worker  # noqa: F401  (a real Celery worker)
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory


@pytest.fixture
def live_asgi(transactional_db) -> Iterator[str]:
    """The project's ASGI application served by uvicorn on 127.0.0.1; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        web_application, lifespan="off", log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def token(transactional_db) -> str:
    """A knox token of alice, a member of workspace acme."""
    user = UserFactory(username="alice")
    MembershipFactory(user=user, workspace=WorkspaceFactory(slug="acme"), role="member")
    return AuthToken.objects.create(user)[1]


@dataclass
class SSE:
    id: int
    event: str
    data: dict[str, Any]


@dataclass
class StreamResult:
    status: int
    headers: dict[str, str]
    events: list[SSE] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    closed_by_server: bool = False
    body: bytes = b""
    # The stream's ``retry:`` field (milliseconds), when it sent one.
    retry: int | None = None


def sse_read(
    url: str,
    token: str | None,
    *,
    headers: dict[str, str | bytes] | None = None,
    stop_after: int | None = None,
    timeout: float = 30,
) -> StreamResult:
    """Read a stream until the server closes it (or ``stop_after`` events, then hang up)."""
    all_headers: dict[str, str | bytes] = {"Authorization": f"Token {token}"} if token else {}
    all_headers.update(headers or {})
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("GET", url, headers=all_headers) as response,
    ):
        result = StreamResult(response.status_code, dict(response.headers))
        if response.status_code != 200:
            result.body = response.read()
            return result
        frame: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                result.comments.append(line[1:].strip())
            elif line:
                name, _, value = line.partition(": ")
                frame[name] = value
            elif set(frame) == {"retry"}:
                result.retry = int(frame.pop("retry"))
            elif frame:
                result.events.append(
                    SSE(int(frame["id"]), frame["event"], json.loads(frame["data"]))
                )
                frame = {}
                if stop_after is not None and len(result.events) == stop_after:
                    return result
        result.closed_by_server = True
        return result


class StreamThread(threading.Thread):
    """``sse_read`` in a thread, so the test can write events while it reads."""

    def __init__(self, url: str, token: str | None, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.args = (url, token)
        self.kwargs = kwargs
        self.result: StreamResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = sse_read(*self.args, **self.kwargs)
        except BaseException as exc:
            self.error = exc

    def outcome(self, timeout: float = 30) -> StreamResult:
        self.join(timeout)
        assert not self.is_alive(), "the stream did not end"
        assert self.error is None, self.error
        assert self.result is not None
        return self.result
