"""The Python client (clients/python) against the real service: the project's ASGI application
served by uvicorn on the test database (``live_asgi``), real Celery workers where a job must run
(``start_worker``), and a TCP proxy that breaks connections the way networks do."""

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from runner_jobs_client import Client, CoordinatorClient, RetryPolicy

from config.redis_client import redis_client
from coordinator.models import CoordinatorKey
from tests.events.conftest import live_asgi, token  # noqa: F401  (the real web tier; alice's token)
from tests.execution.conftest import start_worker  # noqa: F401  (real Celery workers)

# Fast retries, so a test that exercises them does not wait long.
QUICK_RETRIES = RetryPolicy(max_retries=5, max_wait=10, backoff=0.05, backoff_max=0.5)


@pytest.fixture
def client(live_asgi: str, token: str) -> Iterator[Client]:  # noqa: F811
    """alice (a member of workspace acme) on the consumer API."""
    with Client(live_asgi, token, retry=QUICK_RETRIES) as client:
        yield client


@pytest.fixture
def coordinator_key(transactional_db: None) -> str:
    """A coordinator key of every workspace, named ``agents``."""
    return CoordinatorKey.objects.create_key(name="agents", all_workspaces=True)[1]


@pytest.fixture
def coordinator(live_asgi: str, coordinator_key: str) -> Iterator[CoordinatorClient]:  # noqa: F811
    with CoordinatorClient(live_asgi, coordinator_key, retry=QUICK_RETRIES) as coordinator:
        yield coordinator


@pytest.fixture
def quota_cleared() -> None:
    """No request counted against any quota window yet."""
    redis = redis_client()
    for key in redis.scan_iter("runner_jobs:quota:*"):
        redis.delete(key)


_UNAVAILABLE_BODY = json.dumps({"detail": "Unavailable; try again.", "code": "unavailable"})
UNAVAILABLE = (
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    f"Connection: close\r\nContent-Length: {len(_UNAVAILABLE_BODY)}\r\n\r\n{_UNAVAILABLE_BODY}"
).encode()


@dataclass
class BreakingProxy:
    """A TCP proxy in front of the live server. Each connection is relayed as it is, except that
    the first ``unavailable`` connections get a 503 (``Retry-After: 1``) without reaching the
    server, the next ``hang_up`` ones are closed without an answer (the request is lost on the
    way), and the first ``cut_streams`` event streams are cut off in the middle of the frame
    after ``frames_per_stream`` complete ones, as a dropped network connection would."""

    upstream: tuple[str, int]
    unavailable: int = 0
    hang_up: int = 0
    cut_streams: int = 0
    frames_per_stream: int = 3
    url: str = ""
    # The head of the first request of each connection that reached the server.
    requests: list[str] = field(default_factory=list)
    refused: int = 0
    hung_up: int = 0
    cuts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(downstream,), daemon=True).start()

    def _relay(self, downstream: socket.socket) -> None:
        with downstream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = downstream.recv(65536)
                if not chunk:
                    return
                head += chunk
            with self._lock:
                refuse = self.refused < self.unavailable
                self.refused += refuse
                hang_up = not refuse and self.hung_up < self.hang_up
                self.hung_up += hang_up
                refuse = refuse or hang_up
                cut = not refuse and b"/events/stream/" in head.split(b"\r\n", 1)[0]
                cut = cut and self.cuts < self.cut_streams
                self.cuts += cut
                if not refuse:
                    self.requests.append(head.split(b"\r\n\r\n", 1)[0].decode())
            if hang_up:
                return
            if refuse:
                downstream.sendall(UNAVAILABLE)
                return
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(head)
                threading.Thread(target=_pump, args=(downstream, upstream), daemon=True).start()
                self._pump_back(upstream, downstream, cut)

    def _pump_back(self, upstream: socket.socket, downstream: socket.socket, cut: bool) -> None:
        frames = 0
        while chunk := _recv(upstream):
            if cut and frames >= self.frames_per_stream:
                # Half of the next frame, then the line goes dead.
                frame_end = chunk.find(b"\n\n")
                downstream.sendall(
                    chunk[: max(1, (frame_end if frame_end > 0 else len(chunk)) // 2)]
                )
                downstream.shutdown(socket.SHUT_RDWR)
                return
            downstream.sendall(chunk)
            frames += chunk.count(b"\n\n")

    def stream_resumes(self) -> list[int]:
        """The ``Last-Event-ID`` of each stream request, in order (0 when it sent none)."""
        ids = []
        for head in self.requests:
            if "/events/stream/" not in head.split("\r\n", 1)[0]:
                continue
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
            ids.append(int({k.lower(): v for k, v in headers.items()}.get("last-event-id", 0)))
        return ids


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _pump(source: socket.socket, target: socket.socket) -> None:
    while chunk := _recv(source):
        try:
            target.sendall(chunk)
        except OSError:
            return


@pytest.fixture
def proxy(live_asgi: str) -> Iterator[BreakingProxy]:  # noqa: F811
    host, port = live_asgi.removeprefix("http://").split(":")
    breaking = BreakingProxy((host, int(port)))
    breaking.start()
    yield breaking
    breaking.stop()
