"""Steps and custom events of a job. They change no status, but each still bumps the job's
version under its row lock, so its event is ordered with every other write to the job. They
commute, so none is refused because others report at the same time: steps take the row lock
(``job_update_locked``), a custom event is one conditional statement."""

import uuid
from typing import Any

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from runner_jobs.errors import InvalidTransitionError, JobInputError, StepNotFoundError
from runner_jobs.events import (
    CUSTOM_EVENT_TYPE,
    EVENT_TYPE_MAX_LENGTH,
    RESERVED_EVENT_PREFIXES,
    EventType,
)
from runner_jobs.models import (
    STEP_FINISHED_STATUSES,
    TERMINAL_STATUSES,
    JobStatus,
    JobStep,
    RunnerJob,
    StepPhase,
    StepStatus,
)

from .changes import Change, LeaseToken, lease_expiry, stored_value_error
from .locking import job_update_conditional, job_update_locked, lease_check
from .statements import Assignment
from .transitions import require_status

CUSTOM_EVENT_MAX_PAYLOAD_BYTES = 64 * 1024

STEP_FINISH_EVENTS = {
    StepStatus.COMPLETED: EventType.STEP_COMPLETED,
    StepStatus.FAILED: EventType.STEP_FAILED,
    StepStatus.SKIPPED: EventType.STEP_SKIPPED,
}
RUNNING_ONLY = frozenset({JobStatus.RUNNING})
NOT_TERMINAL = frozenset(set(JobStatus) - TERMINAL_STATUSES)


def step_start(
    *,
    job_id: uuid.UUID | str,
    name: str,
    phase: str,
    actor: str,
    lease_token: LeaseToken = None,
) -> JobStep:
    """Start the next step (ordinal = last + 1) of a running job."""
    if phase not in StepPhase.values:
        raise JobInputError({"phase": [f"Must be one of {', '.join(StepPhase.values)}."]})
    steps: list[JobStep] = []

    def create_step(job: RunnerJob) -> JobStep:
        # Safe without a sequence: the versioned UPDATE holds this job's row lock.
        last = job.steps.aggregate(last=Max("ordinal"))["last"] or 0
        step = JobStep.objects.create(
            job=job,
            ordinal=last + 1,
            name=name,
            phase=phase,
            status=StepStatus.RUNNING,
            started_at=timezone.now(),
        )
        steps.append(step)
        return step

    def plan(job: RunnerJob) -> Change:
        lease_check(job, lease_token)
        require_status(job.status, RUNNING_ONLY, "start a step of")
        steps.clear()
        return Change(
            EventType.STEP_STARTED,
            {"name": name, "phase": phase},
            {"lease_expires_at": lease_expiry()},
            extra=create_step,
        )

    job_update_locked(job_id=job_id, plan=plan, actor=actor)
    return steps[-1]


def step_finish(
    *,
    job_id: uuid.UUID | str,
    step_id: int,
    status: str,
    actor: str,
    output: str = "",
    lease_token: LeaseToken = None,
) -> JobStep:
    """Report on a running step: ``running`` with ``output`` appends output (``step.output``);
    ``completed``/``failed``/``skipped`` finish it, appending any ``output``."""
    if status not in STEP_FINISH_EVENTS and status != StepStatus.RUNNING:
        allowed = ", ".join([StepStatus.RUNNING, *STEP_FINISH_EVENTS])
        raise JobInputError({"status": [f"Must be one of {allowed}."]})
    try:
        step = JobStep.objects.get(pk=step_id, job__pk=job_id)
    except JobStep.DoesNotExist as exc:
        raise StepNotFoundError() from exc

    def update_step(job: RunnerJob) -> JobStep:
        step.refresh_from_db()
        if step.status in STEP_FINISHED_STATUSES:
            raise InvalidTransitionError(f"The step is already {step.status}.")
        step.output += output
        # The step's whole output, as stored, is held to the payload limit.
        if error := stored_value_error(
            step.output, name="output", limit=settings.RUNNER_MAX_PAYLOAD_BYTES
        ):
            raise JobInputError({"output": [error]})
        if status != StepStatus.RUNNING:
            step.status = status
            step.completed_at = timezone.now()
            started = step.started_at or step.completed_at
            step.duration_ms = int((step.completed_at - started).total_seconds() * 1000)
        step.save(update_fields=["output", "status", "completed_at", "duration_ms"])
        return step

    def plan(job: RunnerJob) -> Change:
        lease_check(job, lease_token)
        require_status(job.status, RUNNING_ONLY, "report a step of")
        event_type = STEP_FINISH_EVENTS.get(StepStatus(status), EventType.STEP_OUTPUT)
        payload: dict[str, Any] = {"step": step.ordinal, "name": step.name, "status": status}
        if output:
            payload["output"] = output
        return Change(event_type, payload, {"lease_expires_at": lease_expiry()}, extra=update_step)

    job_update_locked(job_id=job_id, plan=plan, actor=actor)
    return step


def event_append(
    *,
    job_id: uuid.UUID | str,
    type: str,
    actor: str,
    payload: dict[str, Any] | None = None,
    step_id: int | None = None,
    lease_token: LeaseToken = None,
) -> RunnerJob:
    """Append a custom event (a dotted lowercase type) to a job that has not ended. It bumps
    the job's version like any change, which keeps one job's events in order."""
    errors: dict[str, list[str]] = {}
    if (
        len(type) > EVENT_TYPE_MAX_LENGTH
        or not CUSTOM_EVENT_TYPE.fullmatch(type)
        or type.startswith(RESERVED_EVENT_PREFIXES)
    ):
        errors["type"] = [
            "Must be a dotted lowercase name of at most 64 characters, "
            "not starting with 'job.' or 'step.'."
        ]
    payload = payload if payload is not None else {}
    if not isinstance(payload, dict):
        errors["payload"] = ["Must be a JSON object."]
    elif error := stored_value_error(payload, name="payload", limit=CUSTOM_EVENT_MAX_PAYLOAD_BYTES):
        errors["payload"] = [error]
    if errors:
        raise JobInputError(errors)
    step = None
    if step_id is not None:
        try:
            step = JobStep.objects.get(pk=step_id, job__pk=job_id)
        except JobStep.DoesNotExist as exc:
            raise StepNotFoundError() from exc

    def refuse(job: RunnerJob) -> None:
        require_status(job.status, NOT_TERMINAL, "add an event to")

    # One conditional statement, like a progress report: never refused for contention.
    return job_update_conditional(
        job_id=job_id,
        statuses=NOT_TERMINAL,
        lease_token=lease_token,
        refuse=refuse,
        assignments=[
            Assignment(
                "lease_expires_at",
                "CASE WHEN status = %s THEN %s ELSE lease_expires_at END",
                (JobStatus.RUNNING, lease_expiry()),
            )
        ],
        event_type=type,
        actor=actor,
        payload=payload,
        step_id=step.pk if step is not None else None,
    )
