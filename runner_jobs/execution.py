"""One attempt of a job in a Celery worker: start it under a new lease, run its handler with a
context (progress, steps, custom events, cancellation), keep the lease alive with a heartbeat,
and report the outcome through the services, always with the attempt's lease token, so an
attempt that lost its job (cancelled, or recovered by the sweeper) can change nothing."""

import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils.module_loading import import_string

from runner_jobs import services
from runner_jobs.models import JobStatus, JobStep, RunnerJob
from runner_jobs.registry import attempt_timeout, external_type_names, job_type_get

logger = logging.getLogger(__name__)

WORKER_ACTOR = "worker"
# ``cancelled`` asks the database at most this often; a handler may check it in a tight loop.
CANCEL_CHECK_INTERVAL_SECONDS = 0.25
# A job is claimed only once due (a run_at is "not before"): a delayed bell is sent a little
# after its job's due time (``bell.BELL_MARGIN_SECONDS``), never early.
DUE_TOLERANCE_SECONDS = 0.0


class TransientJobError(Exception):
    """A handler's error worth retrying: the job is queued again after an exponential backoff
    while attempts remain, else it fails."""

    # The countdown of the retry, once the job was queued again (read by the Celery task).
    retry_delay: float | None = None


class JobError(Exception):
    """A handler's permanent error: the job fails at once with this message as its error."""


class JobStoppedError(Exception):
    """The attempt no longer owns its job (cancelled, or recovered after a lost lease)."""


class JobContext:
    """What a handler gets besides the job: ``progress``, ``step``, ``event``, ``cancelled``.

    Reports raise ``JobStoppedError`` once the job is no longer this attempt's; the handler
    need not catch it (the attempt then ends quietly)."""

    def __init__(self, job: RunnerJob) -> None:
        self.job_id = job.pk
        self.lease_token: uuid.UUID | None = job.lease_token
        self._lost = threading.Event()
        self._last_check = 0.0

    def progress(self, pct: int, message: str | None = None) -> None:
        self._report(services.job_progress_update, progress=pct, message=message)

    def event(self, type: str, payload: dict[str, Any] | None = None) -> None:
        self._report(services.event_append, type=type, payload=payload)

    @contextmanager
    def step(self, name: str, phase: str = "execution") -> Iterator[JobStep]:
        """A step of the job: completed when the block ends, failed when it raises."""
        step = self._report(services.step_start, name=name, phase=phase)
        try:
            yield step
        except JobStoppedError:
            raise
        except BaseException as exc:
            _drop_interrupted_connection(exc)
            self._report(
                services.step_finish, step_id=step.pk, status="failed", output=_error_text(exc)
            )
            raise
        self._report(services.step_finish, step_id=step.pk, status="completed")

    @property
    def cancelled(self) -> bool:
        """True once the job is no longer running under this attempt's lease."""
        now = time.monotonic()
        if not self._lost.is_set() and now - self._last_check >= CANCEL_CHECK_INTERVAL_SECONDS:
            self._last_check = now
            if not RunnerJob.objects.filter(
                pk=self.job_id, status=JobStatus.RUNNING, lease_token=self.lease_token
            ).exists():
                self._lost.set()
        return self._lost.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, waking to check ``cancelled``; ``JobStoppedError`` if it is."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.cancelled:
                raise JobStoppedError()
            time.sleep(min(left, CANCEL_CHECK_INTERVAL_SECONDS))

    def _report(self, service: Callable[..., Any], **kwargs: Any) -> Any:
        if self._lost.is_set():
            raise JobStoppedError()
        try:
            return service(
                job_id=self.job_id, actor=WORKER_ACTOR, lease_token=self.lease_token, **kwargs
            )
        except services.StaleLeaseError as exc:
            self._lost.set()
            raise JobStoppedError() from exc

    def lease_lost(self) -> None:
        self._lost.set()


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, JobError | TransientJobError) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _drop_interrupted_connection(exc: BaseException) -> None:
    """The soft time limit is a signal: it may have cut a query short and left the database
    connection unusable, so the failure is reported on a fresh one."""
    if isinstance(exc, SoftTimeLimitExceeded):
        connection.close()


class AttemptTimeLimitExceeded(SoftTimeLimitExceeded):
    """The attempt's own time limit (``timeout_seconds``, its type's, or the default) ran out."""

    def __init__(self, seconds: int) -> None:
        super().__init__(seconds)
        self.seconds = seconds


@contextmanager
def _attempt_time_limit(seconds: int | None) -> Iterator[None]:
    """Interrupt the handler after ``seconds`` with ``AttemptTimeLimitExceeded``: an alarm
    signal, so only in a process's main thread (a prefork child's); elsewhere (an eager run in a
    thread) Celery's soft limit and the sweeper's deadline still apply."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise AttemptTimeLimitExceeded(seconds)

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Heartbeats:
    """One heartbeat thread per worker process, not one per job: it renews the lease of every
    attempt of this process that has run for a third of the lease, every third of the lease,
    until the attempt ends or its renewal is refused (the job is no longer its: the handler sees
    ``cancelled``). An attempt shorter than a third of the lease never touches it. The thread
    starts on first use in each process (so after a prefork child is forked)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[uuid.UUID | str, tuple[JobContext, float]] = {}
        self._pid: int | None = None
        self._wake = threading.Event()

    def _interval(self) -> float:
        return float(settings.RUNNER_JOB_LEASE_SECONDS) / 3

    def add(self, ctx: JobContext) -> None:
        with self._lock:
            self._attempts[ctx.job_id] = (ctx, time.monotonic())
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="heartbeat", daemon=True).start()
            self._wake.set()

    def remove(self, ctx: JobContext) -> None:
        with self._lock:
            self._attempts.pop(ctx.job_id, None)

    def _due(self) -> list[JobContext]:
        now, interval = time.monotonic(), self._interval()
        with self._lock:
            due = [ctx for ctx, since in self._attempts.values() if now - since >= interval]
            for ctx in due:
                self._attempts[ctx.job_id] = (ctx, now)
        return due

    def _run(self) -> None:
        while True:
            self._wake.wait(max(self._interval() / 4, 0.01))
            self._wake.clear()
            for ctx in self._due():
                self._renew(ctx)

    def _renew(self, ctx: JobContext) -> None:
        token = ctx.lease_token
        assert token is not None, "a started job always has a lease"
        try:
            if not services.job_lease_renew(job_id=ctx.job_id, lease_token=token):
                ctx.lease_lost()
                self.remove(ctx)
        except DatabaseError:
            logger.warning("heartbeat of job %s failed; trying again", ctx.job_id)
            connection.close()


_heartbeats = _Heartbeats()


@contextmanager
def _heartbeat(ctx: JobContext) -> Iterator[None]:
    _heartbeats.add(ctx)
    try:
        yield
    finally:
        _heartbeats.remove(ctx)


def _report_outcome(ctx: JobContext, service: Callable[..., RunnerJob], **kwargs: Any) -> Any:
    """Report the attempt's outcome; None when the job is no longer this attempt's."""
    try:
        return ctx._report(service, **kwargs)
    except JobStoppedError:
        logger.info("job %s is no longer this attempt's; outcome dropped", ctx.job_id)
        return None


def _handler(job: RunnerJob) -> Callable[[RunnerJob, JobContext], Any]:
    job_type = job_type_get(job.type)
    if job_type is None or job_type.handler is None:
        raise JobError(f"No handler for job type {job.type!r} in this worker.")
    handler: Callable[[RunnerJob, JobContext], Any] = import_string(job_type.handler)
    return handler


def job_execute(*, worker: str, task_id: str, retry_delay: Callable[[int], float]) -> None:
    """Answer a doorbell: claim the best runnable Celery-run job (the dispatcher decides which,
    ``services.flow``) and run one attempt of it. A bell that finds nothing runnable does
    nothing (another worker took the job, it was cancelled, or it may not start yet).

    A ``TransientJobError`` that left the job queued again propagates, with its
    ``retry_delay`` set, so the Celery task rings again at that moment.
    """
    job = services.job_claim_next(
        actor=WORKER_ACTOR,
        worker=worker,
        task_id=task_id,
        exclude_types=external_type_names(),
        tolerance=DUE_TOLERANCE_SECONDS,
    )
    if job is None:
        logger.info("doorbell %s: nothing runnable", task_id)
        return
    ctx = JobContext(job)
    with _heartbeat(ctx):
        _run_attempt(job, ctx, retry_delay)


def _limited_result(job: RunnerJob, ctx: JobContext) -> Any:
    handler = _handler(job)
    with _attempt_time_limit(attempt_timeout(job_type_get(job.type), job.timeout_seconds)):
        return handler(job, ctx)


def _run_attempt(job: RunnerJob, ctx: JobContext, retry_delay: Callable[[int], float]) -> None:
    try:
        result = _limited_result(job, ctx)
    except JobStoppedError:
        logger.info("job %s: handler stopped, the job is no longer this attempt's", job.pk)
    except TransientJobError as exc:
        delay = retry_delay(job.attempts)
        updated = _report_outcome(
            ctx, services.job_attempt_failed, error=_error_text(exc), retry_delay=delay
        )
        if updated is not None and updated.status == JobStatus.QUEUED:
            exc.retry_delay = delay
            raise
    except SoftTimeLimitExceeded as exc:
        _drop_interrupted_connection(exc)
        seconds = getattr(exc, "seconds", settings.CELERY_TASK_SOFT_TIME_LIMIT)
        error = services.time_limit_error(seconds)
        _report_outcome(ctx, services.job_fail, error=error)
    except Exception as exc:
        logger.exception("job %s: handler failed", job.pk)
        _report_outcome(ctx, services.job_fail, error=_error_text(exc))
    else:
        try:
            _report_outcome(ctx, services.job_complete, result=result)
        except services.JobInputError as exc:
            # The handler's return value cannot be stored (too large, or JSON PostgreSQL
            # refuses): the attempt fails saying so instead of leaving the job running.
            _report_outcome(ctx, services.job_fail, error=f"Result not stored: {exc.detail}")


def job_fail_time_limit(*, task_id: str, seconds: float) -> None:
    """The hard time limit killed the process running the task ``task_id``: fail the job that
    attempt held (found by its ``lease_task_id``, fenced by its lease token), saying so.
    Reported by the worker's main process."""
    job = RunnerJob.objects.filter(status=JobStatus.RUNNING, lease_task_id=task_id).first()
    if job is None:
        logger.info("task %s held no running job when its hard time limit hit", task_id)
        return
    try:
        services.job_fail(
            job_id=job.pk,
            error=services.time_limit_error(seconds),
            actor=WORKER_ACTOR,
            lease_token=job.lease_token,
        )
    except (services.InvalidTransitionError, services.StaleLeaseError):
        logger.info("job %s had already ended when its hard time limit hit", job.pk)


def backoff_delay(*, attempt: int, base: float, maximum: float, jitter: bool) -> float:
    """Exponential backoff after failed ``attempt`` (1, 2, ...): ``base * 2**(attempt - 1)``
    capped at ``maximum``; with jitter a random point in its upper half, so it still grows."""
    ceiling = min(float(maximum), base * 2 ** (attempt - 1))
    if not jitter:
        return ceiling
    return round(random.uniform(ceiling / 2, ceiling), 3)
