"""The vocabulary of job events: every type the service layer writes is named here once, and
every place that emits, filters or matches event types (services, admin, seeding, chaos
invariants, webhook subscriptions) uses these names. Custom types posted by a coordinator are
any other dotted lowercase name (``CUSTOM_EVENT_TYPE``)."""

import re
from enum import StrEnum


class EventType(StrEnum):
    JOB_CREATED = "job.created"
    JOB_QUEUED = "job.queued"
    JOB_REDISPATCHED = "job.redispatched"
    JOB_STARTED = "job.started"
    JOB_PROGRESS = "job.progress"
    JOB_RETRY_SCHEDULED = "job.retry_scheduled"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_EXPIRED = "job.expired"
    JOB_RETRIED = "job.retried"
    STEP_STARTED = "step.started"
    STEP_COMPLETED = "step.completed"
    STEP_FAILED = "step.failed"
    STEP_SKIPPED = "step.skipped"
    STEP_OUTPUT = "step.output"


# The events that end a job: exactly one per terminal job.
TERMINAL_EVENT_TYPES = frozenset(
    {EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED, EventType.JOB_EXPIRED}
)
# Lifecycle events are written by the service layer only; a coordinator cannot forge them.
RESERVED_EVENT_PREFIXES = ("job.", "step.")
EVENT_TYPE_MAX_LENGTH = 64
# A coordinator's custom event: dotted lowercase, at least two parts ("agent.tool_call").
CUSTOM_EVENT_TYPE = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+")
# A subscription pattern: an exact type, a prefix ("job.*") or "*" for every type.
EVENT_TYPE_PATTERN = re.compile(r"\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?")
EVERY_TYPE = "*"


def event_type_matches(patterns: list[str], event_type: str) -> bool:
    """``patterns`` hold exact types, ``"*"`` (every type) or a prefix like ``"job.*"``."""
    return any(
        p in (EVERY_TYPE, event_type) or (p.endswith(".*") and event_type.startswith(p[:-1]))
        for p in patterns
    )
