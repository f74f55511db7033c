"""Celery tasks: thin, they take ids and call the execution module or a service.

Retry policy is declared on the decorator. Celery's ``autoretry_for`` catches the
``TransientJobError`` a job's attempt re-raises once the job is queued again, and calls
``retry``; ``ExecuteJobTask.retry`` uses the delay the job's ``job.retry_scheduled`` event
recorded (computed from the job's own attempt count with the decorator's backoff settings),
so the event and the real countdown agree. See docs/decisions/0020-execution-retries.md.
"""

from datetime import datetime, timedelta
from typing import Any

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from django.conf import settings

from runner_jobs import execution
from runner_jobs.execution import TransientJobError
from runner_jobs.services.bell import BELL_MARGIN_SECONDS
from runner_jobs.services.operations import (
    RUN_OPERATION_TASK_NAME,
    operation_run,
    operations_resume,
)
from runner_jobs.services.retention import jobs_prune
from runner_jobs.services.schedules import schedules_fire
from runner_jobs.services.sweeper import jobs_sweep

SWEEP_SOFT_TIME_LIMIT_SECONDS = 120
SWEEP_TIME_LIMIT_SECONDS = 150


class ExecuteJobTask(Task):
    retry_backoff: float
    retry_backoff_max: float
    retry_jitter: bool

    def backoff_delay(self, attempt: int) -> float:
        return execution.backoff_delay(
            attempt=attempt,
            base=self.retry_backoff,
            maximum=self.retry_backoff_max,
            jitter=self.retry_jitter,
        )

    def retry(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's autoretry calls this with a countdown from its own retry count; a job
        queued again carries the delay its ``job.retry_scheduled`` event recorded: use that."""
        if isinstance(exc, TransientJobError) and exc.retry_delay is not None:
            countdown = exc.retry_delay + BELL_MARGIN_SECONDS
        return super().retry(
            args, kwargs, exc, throw, eta, countdown, max_retries=max_retries, **options
        )

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Called in the worker's main process after a hard time limit killed the attempt.
        if isinstance(exc, TimeLimitExceeded):
            execution.job_fail_time_limit(task_id=task_id, seconds=settings.CELERY_TASK_TIME_LIMIT)


@shared_task(
    bind=True,
    base=ExecuteJobTask,
    name="runner_jobs.execute_job",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TransientJobError,),
    retry_backoff=settings.RUNNER_RETRY_BACKOFF_SECONDS,
    retry_backoff_max=settings.RUNNER_RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    # The job's attempts/max_attempts decide when to stop, not Celery's retry count.
    max_retries=None,
)
def execute_job_task(self: ExecuteJobTask, job_id: str | None = None) -> None:
    """A doorbell: claim and run the best runnable job. ``job_id`` (the job whose create or
    retry rang, or none) is not what runs: the dispatcher chooses (``services.flow``)."""
    execution.job_execute(
        worker=self.request.hostname or "worker",
        task_id=self.request.id or "eager",
        retry_delay=self.backoff_delay,
    )


@shared_task(
    name="runner_jobs.sweep",
    soft_time_limit=SWEEP_SOFT_TIME_LIMIT_SECONDS,
    time_limit=SWEEP_TIME_LIMIT_SECONDS,
)
def sweep_task() -> dict[str, Any]:
    return vars(jobs_sweep())


@shared_task(name="runner_jobs.prune_jobs", ignore_result=True)
def prune_jobs_task() -> dict[str, Any]:
    """The daily retention run: ``prune_jobs --older-than <RUNNER_RETENTION_DAYS>d``."""
    result = jobs_prune(older_than=timedelta(days=settings.RUNNER_RETENTION_DAYS))
    return {"jobs": result.jobs, "steps": result.steps, "events": result.events}


@shared_task(name="runner_jobs.fire_schedules", ignore_result=True)
def fire_schedules_task() -> dict[str, int]:
    """The beat's schedule tick: make the jobs of every due schedule, once per due time."""
    return vars(schedules_fire())


@shared_task(name=RUN_OPERATION_TASK_NAME, ignore_result=True)
def run_operation_task(operation_id: str) -> None:
    """A bulk operation's batches (a while, then it sends itself again)."""
    operation_run(operation_id=operation_id)


@shared_task(name="runner_jobs.resume_operations", ignore_result=True)
def resume_operations_task() -> int:
    """Beat: send again the operations whose run stalled (a lost message, a dead worker)."""
    return operations_resume()
