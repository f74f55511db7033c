"""The job-type registry: which types exist, and whether a Celery handler or a coordinator runs
them. Built-in types are always registered; ``settings.RUNNER_JOB_TYPES`` adds more (or
overrides a built-in's options)."""

from dataclasses import dataclass

from django.conf import settings

DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class JobType:
    name: str
    # Dotted path of the handler a Celery worker runs; None for an external type, which is left
    # ``queued`` for a coordinator to claim.
    handler: str | None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # Per-attempt time limit of the type's jobs (a job's own timeout_seconds overrides it). None:
    # RUNNER_JOB_TIME_LIMIT_SECONDS for a Celery-run type, no limit for an external one.
    timeout_seconds: int | None = None

    @property
    def external(self) -> bool:
        return self.handler is None


BUILTIN_JOB_TYPES: dict[str, JobType] = {
    "echo": JobType("echo", "runner_jobs.handlers.echo"),
    "sleep": JobType("sleep", "runner_jobs.handlers.sleep"),
    "fail": JobType("fail", "runner_jobs.handlers.fail"),
    "flaky": JobType("flaky", "runner_jobs.handlers.flaky"),
    "agent-task": JobType("agent-task", None),
}


def job_types() -> dict[str, JobType]:
    """Every registered type by name: the built-ins, then ``RUNNER_JOB_TYPES``."""
    types = dict(BUILTIN_JOB_TYPES)
    for name, options in settings.RUNNER_JOB_TYPES.items():
        handler = None if options.get("external") else options.get("handler")
        max_attempts = options.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        timeout = options.get("timeout_seconds")
        types[name] = JobType(
            name,
            str(handler) if handler else None,
            int(str(max_attempts)),
            int(str(timeout)) if timeout is not None else None,
        )
    return types


def attempt_timeout(job_type: JobType | None, timeout_seconds: int | None) -> int | None:
    """The time limit of one attempt of a job with ``timeout_seconds`` of ``job_type``: its own,
    else its type's, else (Celery-run) ``RUNNER_JOB_TIME_LIMIT_SECONDS``; None: no limit (an
    external type without one)."""
    if timeout_seconds is not None:
        return timeout_seconds
    if job_type is not None and job_type.timeout_seconds is not None:
        return job_type.timeout_seconds
    if job_type is not None and job_type.external:
        return None
    return int(settings.RUNNER_JOB_TIME_LIMIT_SECONDS)


def job_type_get(name: str) -> JobType | None:
    return job_types().get(name)


def celery_type_names() -> list[str]:
    """The registered types Celery workers run (every type but the coordinators')."""
    return [name for name, job_type in job_types().items() if not job_type.external]


def external_type_names() -> list[str]:
    """The registered types coordinators claim."""
    return [name for name, job_type in job_types().items() if job_type.external]
