"""What the API returns, with typed attributes for the documented fields.

Each object keeps the whole JSON it came from in ``data``, and ``obj["field"]`` reads any field,
so fields the server adds later (``tags``, ``run_at``, ...) are there before this package
names them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})
# The event each terminal status is entered with; the stream of a job ends after it.
TERMINAL_EVENTS = frozenset(f"job.{status}" for status in TERMINAL_STATUSES)


def _datetime(value: Any) -> datetime | None:
    if not value:
        return None
    # fromisoformat reads "Z" only from Python 3.11 on.
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class _Resource(Mapping[str, Any]):
    """A read-only mapping over the API's JSON, with attributes for the known fields."""

    __slots__ = ("data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data: dict[str, Any] = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.data == self.data  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.data.get("id")))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.data!r})"


class Event(_Resource):
    """A job event: ``job.created``, ``job.progress``, ``step.started``, a custom type ..."""

    __slots__ = ()

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def job(self) -> str:
        return str(self.data["job"])

    @property
    def step(self) -> int | None:
        step = self.data.get("step")
        return None if step is None else int(step)

    @property
    def type(self) -> str:
        return str(self.data["type"])

    @property
    def timestamp(self) -> datetime | None:
        return _datetime(self.data.get("timestamp"))

    @property
    def actor(self) -> str:
        return str(self.data.get("actor", ""))

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.data.get("payload") or {})

    @property
    def terminal(self) -> bool:
        """The event that ended the job (completed, failed, cancelled or expired)."""
        return self.type in TERMINAL_EVENTS


class Step(_Resource):
    """A step of a job (``setup``, ``execution``, ``validation`` or ``cleanup`` phase)."""

    __slots__ = ()

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def ordinal(self) -> int:
        return int(self.data["ordinal"])

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def phase(self) -> str:
        return str(self.data["phase"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def output(self) -> str:
        return str(self.data.get("output") or "")

    @property
    def duration_ms(self) -> int | None:
        duration = self.data.get("duration_ms")
        return None if duration is None else int(duration)


class Job(_Resource):
    """A job. ``steps`` and ``events`` are filled on a single job's read (``get``), empty in
    lists."""

    __slots__ = ()

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def workspace(self) -> str:
        return str(self.data["workspace"])

    @property
    def type(self) -> str:
        return str(self.data["type"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def terminal(self) -> bool:
        """Nothing will change this job any more."""
        return self.status in TERMINAL_STATUSES

    @property
    def priority(self) -> int:
        return int(self.data.get("priority", 5))

    @property
    def progress(self) -> int:
        return int(self.data.get("progress") or 0)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.data.get("payload") or {})

    @property
    def result(self) -> Any:
        return self.data.get("result")

    @property
    def error(self) -> str:
        return str(self.data.get("error") or "")

    @property
    def agent_task_id(self) -> str | None:
        return self.data.get("agent_task_id")

    @property
    def attempts(self) -> int:
        return int(self.data.get("attempts") or 0)

    @property
    def max_attempts(self) -> int | None:
        value = self.data.get("max_attempts")
        return None if value is None else int(value)

    @property
    def retry_of(self) -> str | None:
        return self.data.get("retry_of")

    @property
    def created_by(self) -> str | None:
        return self.data.get("created_by")

    @property
    def version(self) -> int:
        return int(self.data["version"])

    @property
    def etag(self) -> str:
        """What ``If-Match`` takes to act only on this version of the job."""
        return f'"{self.version}"'

    @property
    def created_at(self) -> datetime | None:
        return _datetime(self.data.get("created_at"))

    @property
    def queued_at(self) -> datetime | None:
        return _datetime(self.data.get("queued_at"))

    @property
    def started_at(self) -> datetime | None:
        return _datetime(self.data.get("started_at"))

    @property
    def completed_at(self) -> datetime | None:
        return _datetime(self.data.get("completed_at"))

    @property
    def steps(self) -> list[Step]:
        return [Step(step) for step in self.data.get("steps") or []]

    @property
    def events(self) -> list[Event]:
        return [Event(event) for event in self.data.get("events") or []]
