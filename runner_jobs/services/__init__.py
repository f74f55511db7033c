"""The one door for writes to jobs, steps and events. Views, admin actions, Celery tasks and the
coordinator API call these functions; nothing else saves a job.

``__all__`` is what other apps call; the modules' other names are for this package and its
tests. Errors live in ``runner_jobs.errors`` (they import nothing of the services)."""

from runner_jobs.errors import (
    BrokerUnavailableError,
    ConcurrentUpdateError,
    DuplicateJobError,
    IdempotencyConflictError,
    InvalidTransitionError,
    JobInputError,
    JobNotFoundError,
    JobServiceError,
    PreconditionFailedError,
    StaleLeaseError,
    StepNotFoundError,
)

from .dispatch import job_dispatch, job_redispatch
from .jobs import (
    JobCreateResult,
    JobSpec,
    job_attempt_failed,
    job_cancel,
    job_claim,
    job_claim_next,
    job_complete,
    job_create,
    job_expire,
    job_fail,
    job_lease_renew,
    job_progress_update,
    job_retry,
    job_start,
    job_time_out,
    time_limit_error,
)
from .operations import (
    jobs_matching,
    operation_cancel,
    operation_create,
    operation_run,
    operation_start,
    operations_resume,
)
from .reports import job_release, job_status_report
from .retention import PRUNE_BATCH_SIZE, PruneResult, jobs_prune
from .steps import event_append, step_finish, step_start
from .sweeper import SweepReport, jobs_sweep
from .workers import worker_seen, worker_stopped

__all__ = [
    "PRUNE_BATCH_SIZE",
    "BrokerUnavailableError",
    "ConcurrentUpdateError",
    "DuplicateJobError",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "JobCreateResult",
    "JobInputError",
    "JobNotFoundError",
    "JobServiceError",
    "JobSpec",
    "PreconditionFailedError",
    "PruneResult",
    "StaleLeaseError",
    "StepNotFoundError",
    "SweepReport",
    "event_append",
    "job_attempt_failed",
    "job_cancel",
    "job_claim",
    "job_claim_next",
    "job_complete",
    "job_create",
    "job_dispatch",
    "job_expire",
    "job_fail",
    "job_lease_renew",
    "job_progress_update",
    "job_redispatch",
    "job_release",
    "job_retry",
    "job_start",
    "job_status_report",
    "job_time_out",
    "jobs_matching",
    "jobs_prune",
    "jobs_sweep",
    "operation_cancel",
    "operation_create",
    "operation_run",
    "operation_start",
    "operations_resume",
    "step_finish",
    "step_start",
    "time_limit_error",
    "worker_seen",
    "worker_stopped",
]
