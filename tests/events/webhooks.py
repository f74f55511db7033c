"""What the webhook tests share: a real local receiver, a workspace admin, endpoints and their
pending deliveries made through the herald. ``receiver`` and ``admin_user`` are fixtures of
every test under tests/events (its conftest imports them)."""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from job_events import herald
from job_events.models import WebhookEndpoint
from runner_jobs.models import JobEvent
from tests.factories import MembershipFactory, UserFactory
from workspaces.models import Workspace

URL = "/api/v1/webhooks/"


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP endpoint answering with ``statuses`` in turn (the last one repeats)."""

    url: str
    statuses: list[int]
    delay: float = 0
    requests: list[Received] = field(default_factory=list)
    answer_headers: dict[str, str] = field(default_factory=dict)
    # Requests being answered now, and the most there ever were at once, by path.
    in_flight: dict[str, int] = field(default_factory=dict)
    most_in_flight: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1, which deliveries may reach only because the test's operator
    allows it (``RUNNER_WEBHOOK_ALLOWED_NETWORKS``)."""
    settings.RUNNER_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    state = Receiver(url="", statuses=[200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.requests.append(Received(time.monotonic(), dict(self.headers), body))
                now = state.in_flight[self.path] = state.in_flight.get(self.path, 0) + 1
                state.most_in_flight[self.path] = max(now, state.most_in_flight.get(self.path, 0))
            time.sleep(state.delay)
            with state.lock:
                state.in_flight[self.path] -= 1
            n = len(state.requests) - 1
            status = state.statuses[min(n, len(state.statuses) - 1)]
            self.send_response(status)
            for name, value in state.answer_headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b"nope" if status >= 300 else b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def admin_user(workspace) -> Any:
    user = UserFactory(username="ada")
    MembershipFactory(user=user, workspace=workspace, role="admin")
    return user


def endpoint_for(workspace: Workspace, url: str, types: list[str] | None = None) -> WebhookEndpoint:
    return herald.webhook_endpoint_create(workspace=workspace, url=url, event_types=types or ["*"])


def pending_for(event: JobEvent) -> list[int]:
    """The event's deliveries, recorded as its writer does (the outbox rows)."""
    return herald.webhook_deliveries_record(events=[event], workspace_id=event.job.workspace_id)
