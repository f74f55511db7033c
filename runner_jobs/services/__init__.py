"""The one door for writes to jobs, steps and events. Views, admin actions, Celery tasks and the
coordinator API call these functions; nothing else saves a job."""

from .errors import (
    ConcurrentUpdateError,
    IdempotencyConflictError,
    InvalidTransitionError,
    JobInputError,
    JobNotFoundError,
    JobServiceError,
    PreconditionFailedError,
    StaleLeaseError,
    StepNotFoundError,
)

# isort: split
# The errors first: the modules below import (through job_events) selectors that import them
# from this package.
from .dispatch import (
    BrokerUnavailableError,
    broker_priority,
    job_dispatch,
    job_publish,
    job_redispatch,
)
from .jobs import (
    WORKER_LOST_ERROR,
    JobCreateResult,
    job_attempt_failed,
    job_cancel,
    job_claim,
    job_complete,
    job_create,
    job_fail,
    job_lease_renew,
    job_progress_update,
    job_queue,
    job_recover_lost,
    job_retry,
    job_start,
)
from .locking import job_lock, job_update_locked, job_update_optimistic
from .reports import job_release, job_status_report
from .retention import PRUNE_BATCH_SIZE, PruneResult, jobs_prune
from .steps import event_append, step_finish, step_start
from .sweeper import SweepReport, jobs_sweep
from .transitions import RETRYABLE_STATUSES, TRANSITIONS, transition_check

__all__ = [
    "PRUNE_BATCH_SIZE",
    "RETRYABLE_STATUSES",
    "TRANSITIONS",
    "WORKER_LOST_ERROR",
    "BrokerUnavailableError",
    "ConcurrentUpdateError",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "JobCreateResult",
    "JobInputError",
    "JobNotFoundError",
    "JobServiceError",
    "PreconditionFailedError",
    "PruneResult",
    "StaleLeaseError",
    "StepNotFoundError",
    "SweepReport",
    "broker_priority",
    "event_append",
    "job_attempt_failed",
    "job_cancel",
    "job_claim",
    "job_complete",
    "job_create",
    "job_dispatch",
    "job_fail",
    "job_lease_renew",
    "job_lock",
    "job_progress_update",
    "job_publish",
    "job_queue",
    "job_recover_lost",
    "job_redispatch",
    "job_release",
    "job_retry",
    "job_start",
    "job_status_report",
    "job_update_locked",
    "job_update_optimistic",
    "jobs_prune",
    "jobs_sweep",
    "step_finish",
    "step_start",
    "transition_check",
]
