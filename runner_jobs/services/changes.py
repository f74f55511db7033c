"""Change builders: what one write does to a job (its new field values and the one event that
records it), shared by every lifecycle service. Nothing here reads or locks the database."""

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from runner_jobs.events import EventType
from runner_jobs.models import JobStatus, JobStep, RunnerJob
from runner_jobs.storable import unstorable_reason

LeaseToken = uuid.UUID | str | None


@dataclass
class Change:
    """What one write does to a job: new field values and the one event that records it.

    ``extra`` writes rows that belong with the change (a step, a retry's new job) after the
    job's row is locked; it may return the step the event is about. ``on_commit`` runs after
    the transaction commits (dispatch, notifications), never before.
    """

    event_type: str
    event_payload: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    extra: Callable[[RunnerJob], JobStep | None] | None = None
    on_commit: Callable[[], None] | None = None


Plan = Callable[[RunnerJob], Change]

LEASE_CLEARED: dict[str, Any] = {"lease_token": None, "lease_expires_at": None}


def lease_expiry() -> datetime:
    return timezone.now() + timedelta(seconds=settings.RUNNER_JOB_LEASE_SECONDS)


def lease_fields(worker: str) -> dict[str, Any]:
    """A fresh lease for a new attempt."""
    return {
        "lease_token": uuid.uuid4(),
        "lease_owner": worker,
        "lease_expires_at": lease_expiry(),
    }


def queue_fields(delay_seconds: float = 0) -> dict[str, Any]:
    """The fields of a job entering ``queued``, due after ``delay_seconds``."""
    now = timezone.now()
    return {
        "status": JobStatus.QUEUED,
        "queued_at": now,
        "due_at": now + timedelta(seconds=delay_seconds),
    }


def requeue_change(payload: dict[str, Any]) -> Change:
    """``running`` -> ``queued`` at once, the attempt's lease void (recovery, a hand-back)."""
    return Change(EventType.JOB_QUEUED, payload, {**queue_fields(), **LEASE_CLEARED})


def stored_value_error(value: Any, *, name: str, limit: int | None = None) -> str | None:
    """The one rule for what clients store: PostgreSQL must be able to store it (no NUL or lone
    surrogate in its text, no infinity or NaN, no absurd nesting: ``runner_jobs.storable``), and
    it must fit ``limit``, JSON values (payloads) measured as compact JSON, text (step output) as
    UTF-8. The error to show for field ``name``, or None when ``value`` may be stored."""
    if reason := unstorable_reason(value, path=name):
        return reason
    if limit is None:
        return None
    if isinstance(value, str):
        size, unit = len(value.encode()), "bytes"
    else:
        size, unit = len(json.dumps(value, separators=(",", ":")).encode()), "bytes as JSON"
    return f"Must be at most {limit} {unit}." if size > limit else None
