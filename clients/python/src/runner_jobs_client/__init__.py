"""Python client for Runner Jobs.

* :class:`Client` / :class:`AsyncClient`: the consumer API (create, list, follow, wait, ...).
* :class:`CoordinatorClient`: claim jobs and run them, with self-renewing leases.
* :func:`verify_webhook`: check a webhook delivery's signature.
"""

from runner_jobs_client._core import NO_RETRIES, RetryPolicy, __version__
from runner_jobs_client.async_client import AsyncClient
from runner_jobs_client.client import Client
from runner_jobs_client.coordinator import CoordinatorClient, Lease, LeaseStep
from runner_jobs_client.errors import (
    ApiError,
    AuthenticationFailed,
    ConcurrentUpdate,
    Conflict,
    DuplicateJob,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    RateLimited,
    RetryableError,
    RunnerJobsError,
    ServiceUnavailable,
    StaleLease,
    ValidationError,
    WaitTimeout,
)
from runner_jobs_client.models import Event, Job, Step
from runner_jobs_client.webhooks import SIGNATURE_HEADER, verify_webhook

__all__ = [
    "NO_RETRIES",
    "SIGNATURE_HEADER",
    "ApiError",
    "AsyncClient",
    "AuthenticationFailed",
    "Client",
    "ConcurrentUpdate",
    "Conflict",
    "CoordinatorClient",
    "DuplicateJob",
    "Event",
    "IdempotencyConflict",
    "InvalidTransition",
    "Job",
    "Lease",
    "LeaseStep",
    "NotFound",
    "PermissionDenied",
    "PreconditionFailed",
    "RateLimited",
    "RetryPolicy",
    "RetryableError",
    "RunnerJobsError",
    "ServiceUnavailable",
    "StaleLease",
    "Step",
    "ValidationError",
    "WaitTimeout",
    "__version__",
    "verify_webhook",
]
