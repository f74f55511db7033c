"""The state machine, as data. ``TRANSITIONS`` is the only place that says which moves exist."""

from runner_jobs.errors import InvalidTransitionError
from runner_jobs.models import JobStatus

S = JobStatus

TRANSITIONS: dict[str, frozenset[str]] = {
    # -> expired: not started before its expires_at (the sweeper's expiry pass).
    S.PENDING: frozenset({S.QUEUED, S.CANCELLED, S.EXPIRED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.EXPIRED}),
    # running -> queued: a retry after a transient error, or recovery of a lost worker's job.
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.QUEUED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
}

# A retry makes a new job; these are the states the old one may be in.
RETRYABLE_STATUSES = frozenset({S.FAILED, S.CANCELLED, S.EXPIRED})


def transition_check(current: str, target: str) -> None:
    """Raise ``InvalidTransitionError`` unless ``current -> target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransitionError(f"A {current} job cannot become {target}.")


def require_status(current: str, allowed: frozenset[str], action: str) -> None:
    """Raise ``InvalidTransitionError`` unless the job is in one of ``allowed``."""
    if current not in allowed:
        raise InvalidTransitionError(f"Cannot {action} a {current} job.")
