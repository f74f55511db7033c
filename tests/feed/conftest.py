"""The workspace feed over real HTTP (uvicorn) against the real PostgreSQL and Redis."""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.events.conftest import live_asgi, token  # noqa: F401  (uvicorn, alice's token)


@dataclass
class FeedFrame:
    cursor: str
    event: str
    data: dict[str, Any]


@dataclass(eq=False)
class FeedReader(threading.Thread):
    """Follows ``url`` in a thread until told to stop (the feed never ends by itself)."""

    url: str
    token: str
    headers: dict[str, str] = field(default_factory=dict)
    frames: list[FeedFrame] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None
    retry: str | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(daemon=True)
        self._stop_reading = threading.Event()

    def run(self) -> None:
        try:
            self._read()
        except BaseException as exc:
            if not self._stop_reading.is_set():
                self.error = exc

    def _read(self) -> None:
        headers = {"Authorization": f"Token {self.token}", **self.headers}
        with (
            httpx.Client(timeout=httpx.Timeout(60, read=60)) as client,
            client.stream("GET", self.url, headers=headers) as response,
        ):
            self.status = response.status_code
            frame: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop_reading.is_set():
                    return
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line:
                    name, _, value = line.partition(": ")
                    frame[name] = value
                elif frame:
                    # A frame without an id is the opening "retry:" advice.
                    if "id" in frame:
                        self.frames.append(
                            FeedFrame(frame["id"], frame["event"], json.loads(frame["data"]))
                        )
                    else:
                        self.retry = frame.get("retry")
                    frame = {}
        raise AssertionError("the server closed the feed")

    def stop(self) -> None:
        self._stop_reading.set()
        self.join(5)


@pytest.fixture
def follow() -> Iterator[Any]:
    readers: list[FeedReader] = []

    def start(url: str, auth_token: str, **headers: str) -> FeedReader:
        reader = FeedReader(url, auth_token, headers)
        reader.start()
        readers.append(reader)
        return reader

    yield start
    for reader in readers:
        reader.stop()
