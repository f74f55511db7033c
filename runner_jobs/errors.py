"""Domain errors of the service layer. Each carries the API ``code`` and HTTP status it maps to,
so every caller (API, coordinator, admin, worker) reports the same refusal the same way."""

from typing import Any


class JobServiceError(Exception):
    code = "error"
    status_code = 400
    default_detail = "The request could not be carried out."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class JobNotFoundError(JobServiceError):
    code = "not_found"
    status_code = 404
    default_detail = "No such job."


class JobTypeNotFoundError(JobServiceError):
    code = "not_found"
    status_code = 404
    default_detail = "No such job type."


class StepNotFoundError(JobServiceError):
    code = "not_found"
    status_code = 404
    default_detail = "No such step for this job."


class InvalidTransitionError(JobServiceError):
    code = "invalid_transition"
    status_code = 409
    default_detail = "The job's state does not allow this."


class ConcurrentUpdateError(JobServiceError):
    code = "concurrent_update"
    status_code = 409
    default_detail = "The job was changed concurrently; try again."


class StaleLeaseError(JobServiceError):
    code = "stale_lease"
    status_code = 409
    default_detail = "This lease token belongs to an earlier attempt; the job is no longer yours."


class PreconditionFailedError(JobServiceError):
    code = "precondition_failed"
    status_code = 412
    default_detail = "The job's version no longer matches If-Match."


class DuplicateJobError(JobServiceError):
    """A create named the ``unique_key`` of a job still live in its workspace (``job``)."""

    code = "duplicate_job"
    status_code = 409
    default_detail = "A job with this unique_key is still pending, queued or running."

    def __init__(self, job: object) -> None:
        self.job = job
        super().__init__()


class NotRunnableError(JobServiceError):
    """A start other than a claim (a coordinator's ``status: running``) of a queued job the
    dispatcher would not start now: its run_at, expiry, concurrency key or type policy."""

    code = "not_runnable"
    status_code = 409

    def __init__(self, job_id: object, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(
            f"The job may not start now ({', '.join(reasons)}); "
            f"GET /api/v1/runner-jobs/{job_id}/explain/ says why."
        )


class IdempotencyConflictError(JobServiceError):
    code = "idempotency_conflict"
    status_code = 422
    default_detail = "This Idempotency-Key was already used with a different request body."


class JobInputError(JobServiceError):
    """Bad input found by a domain rule; ``errors`` is a DRF-style field-error object (a list of
    messages per field, or a nested object of them, e.g. for a bulk operation's ``filter``)."""

    code = "invalid"
    status_code = 400

    def __init__(self, errors: dict[str, Any]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {_messages(v)}" for k, v in errors.items()))


def _messages(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_messages(v)}" for k, v in value.items())
    return " ".join(str(message) for message in value)


class BrokerUnavailableError(JobServiceError):
    code = "broker_unavailable"
    status_code = 503
    default_detail = "The broker did not accept the job's message."
