"""Every write to a job's lifecycle: create, queue, start, progress, complete, fail, cancel,
retry, claim and recovery. Each is a plan (check the state machine and the lease, then say what
changes and which event records it) run through one of the two lock helpers."""

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from runner_jobs import metrics
from runner_jobs.errors import (
    DuplicateJobError,
    IdempotencyConflictError,
    InvalidTransitionError,
    JobInputError,
    JobNotFoundError,
    JobServiceError,
)
from runner_jobs.events import EventType
from runner_jobs.labels import metadata_errors, tags_errors, tags_normalized
from runner_jobs.models import ACTIVE_STATUSES, JobStatus, RunnerJob
from runner_jobs.registry import JobType, attempt_timeout, job_type_get
from workspaces.models import Workspace

from . import flow, statements
from .changes import (
    LEASE_CLEARED,
    Change,
    LeaseToken,
    Plan,
    lease_expiry,
    lease_fields,
    queue_fields,
    requeue_change,
    stored_value_error,
)
from .dispatch import job_publish_on_commit
from .events import events_by_workspace_committed_on_commit, events_committed_on_commit
from .locking import (
    job_update_conditional,
    job_update_locked,
    job_update_optimistic,
    job_write,
    jobs_lock,
    jobs_lock_claimable,
    jobs_write,
    lease_check,
)
from .transitions import RETRYABLE_STATUSES, require_status, transition_check

logger = logging.getLogger(__name__)
S = JobStatus
E = EventType
RUNNING_ONLY = frozenset({JobStatus.RUNNING})
SYSTEM = "system"

CLAIM_ATTEMPTS = 5
# A claim that found nothing while runnable jobs remain looks again after 10, 20, 40, 80 ms.
CLAIM_BACKOFF_SECONDS = 0.01
UNIQUE_KEY_INDEX = "job_unique_key_live"
ALREADY_RETRIED = "It was already retried; act on its retry (its retry_of names this job)."
WORKER_LOST_ERROR = "Worker lost: the job's lease expired while it was running."


def time_limit_error(seconds: float) -> str:
    return f"Time limit exceeded: the attempt ran longer than {seconds:g} s."


@dataclass(frozen=True)
class JobSpec:
    """The fields of a new job as its creator states them: one object for the consumer's and
    the coordinator's create, a retry (the old job's fields) and the idempotency fingerprint."""

    type: str
    payload: Any
    priority: int = 5
    agent_task_id: str | None = None
    max_attempts: int | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    unique_key: str | None = None
    run_at: datetime | None = None
    ttl_seconds: int | None = None
    timeout_seconds: int | None = None

    @classmethod
    def of(cls, job: RunnerJob) -> "JobSpec":
        """The spec ``job`` was made from (what a retry repeats)."""
        return cls(
            type=job.type,
            payload=job.payload,
            priority=job.priority,
            agent_task_id=job.agent_task_id,
            max_attempts=job.max_attempts,
            tags=list(job.tags),
            metadata=dict(job.metadata),
            concurrency_key=job.concurrency_key,
            concurrency_limit=job.concurrency_limit,
            unique_key=job.unique_key,
            ttl_seconds=job.ttl_seconds,
            timeout_seconds=job.timeout_seconds,
        )

    def fingerprint(self, workspace: Workspace) -> str:
        """What tells a repeat of an idempotent create from a different body. Fields added after
        keys were first stored count only when set, so an older create's fingerprint holds."""
        fields = {"workspace": workspace.slug, **asdict(self)}
        for name in FINGERPRINT_IF_SET:
            if not fields[name]:
                del fields[name]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def job_type(self) -> JobType:
        """Domain checks on the new job's input; its registered type."""
        job_type = job_type_get(self.type)
        errors: dict[str, list[str]] = {}
        if job_type is None:
            errors["type"] = [f"Unknown job type {self.type!r}."]
        if not isinstance(self.payload, dict):
            errors["payload"] = ["Must be a JSON object."]
        elif error := stored_value_error(
            self.payload, name="payload", limit=settings.RUNNER_MAX_PAYLOAD_BYTES
        ):
            errors["payload"] = [error]
        if tag_errors := tags_errors(self.tags):
            errors["tags"] = tag_errors
        if meta_errors := metadata_errors(self.metadata):
            errors["metadata"] = meta_errors
        errors.update(
            flow.spec_errors(self.concurrency_key, self.concurrency_limit, self.unique_key)
        )
        errors.update(flow.limits_errors(self.ttl_seconds, self.timeout_seconds))
        if errors:
            raise JobInputError(errors)
        assert job_type is not None
        return job_type


FINGERPRINT_IF_SET = (
    "tags",
    "metadata",
    "concurrency_key",
    "concurrency_limit",
    "unique_key",
    "run_at",
    "ttl_seconds",
    "timeout_seconds",
)
# What a retry may change (SPEC §9 "Retry with changes").
RETRY_CHANGEABLE_FIELDS = frozenset({"payload", "priority", "tags", "metadata", "run_at"})


@dataclass(frozen=True)
class JobCreateResult:
    job: RunnerJob
    created: bool


@dataclass(frozen=True)
class NewJob:
    """A job to insert ``queued`` (every field set) with its ``job.created`` and ``job.queued``
    events; ``external`` when it waits for a coordinator (no doorbell)."""

    job: RunnerJob
    events: list[statements.EventSpec]
    external: bool


NEW_JOB_EVENT_TYPES: list[str] = [E.JOB_CREATED, E.JOB_QUEUED]


def _job_new(
    *,
    workspace: Workspace,
    spec: JobSpec,
    actor: str,
    created_by: User | None,
    retry_of: RunnerJob | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    job_id: uuid.UUID | None = None,
    event_extra: Mapping[str, Any] | None = None,
) -> NewJob:
    """A new job as a create or a retry makes it: already ``queued``, with its ``job.created``
    (``event_extra`` added to its payload) and ``job.queued`` events."""
    job_type = spec.job_type()
    job = RunnerJob(
        id=job_id or uuid.uuid4(),
        workspace=workspace,
        type=job_type.name,
        payload=spec.payload,
        priority=spec.priority,
        agent_task_id=spec.agent_task_id,
        max_attempts=spec.max_attempts or job_type.max_attempts,
        retry_of=retry_of,
        created_by=created_by,
        idempotency_key=idempotency_key,
        idempotency_fingerprint=fingerprint,
        concurrency_key=spec.concurrency_key,
        concurrency_limit=flow.concurrency_limit(spec.concurrency_key, spec.concurrency_limit),
        unique_key=spec.unique_key,
        run_at=spec.run_at,
        ttl_seconds=spec.ttl_seconds,
        timeout_seconds=spec.timeout_seconds,
        version=2,
        tags=tags_normalized(spec.tags),
        metadata=spec.metadata,
        **flow.queued_fields(spec.run_at, spec.ttl_seconds),
    )
    created_payload: dict[str, Any] = {"type": job_type.name, "priority": spec.priority}
    if retry_of is not None:
        created_payload["retry_of"] = str(retry_of.pk)
    created_payload.update(event_extra or {})
    queued_by, queued_payload = (actor, {"external": True}) if job_type.external else (SYSTEM, {})
    events: list[statements.EventSpec] = [
        (E.JOB_CREATED, actor, created_payload),
        (E.JOB_QUEUED, queued_by, queued_payload),
    ]
    return NewJob(job=job, events=events, external=job_type.external)


def _job_insert(*, actor: str, **fields: Any) -> RunnerJob:
    """Insert a new job (``_job_new``'s ``fields``) and its events in one statement."""
    return _new_job_insert(_job_new(actor=actor, **fields), actor=actor)


def _new_job_insert(new: NewJob, *, actor: str) -> RunnerJob:
    """Insert ``new`` and its events in one statement. A Celery-run job's message is published
    after the commit; if that publish fails or never happens, the sweeper sends it again (as
    for any lost message)."""
    written = _insert_unique(new.job, new.events)
    job = written.job
    events_committed_on_commit(written.events, workspace_id=job.workspace_id)
    metrics.job_changes_observed(
        job=job, event_types=NEW_JOB_EVENT_TYPES, actor=actor, transition=True
    )
    if not new.external:
        transaction.on_commit(lambda: job_publish_on_commit(job), robust=True)
    return job


def _jobs_insert(news: list[NewJob], *, actor: str) -> None:
    """``_job_insert`` for a batch of new jobs without unique keys (a bulk retry's): the jobs
    and their events in one statement, the side effects once for the batch; each Celery-run
    job still rings its own doorbell after the commit."""
    if not news:
        return
    events = statements.jobs_insert([(new.job, new.events) for new in news])
    jobs = [new.job for new in news]
    events_by_workspace_committed_on_commit(
        events, workspace_of={job.pk: job.workspace_id for job in jobs}
    )
    metrics.jobs_changes_observed(
        jobs=jobs, event_types=NEW_JOB_EVENT_TYPES, actor=actor, transition=True
    )
    rung = [new.job for new in news if not new.external]

    def publish() -> None:
        for job in rung:
            job_publish_on_commit(job)

    transaction.on_commit(publish, robust=True)


def _insert_unique(job: RunnerJob, events: Sequence[statements.EventSpec]) -> statements.Written:
    """``statements.job_insert``; with a ``unique_key`` a live job holding it (the partial
    unique index decides, so of racing creates exactly one inserts) raises
    ``DuplicateJobError`` with that job. Inside a transaction the insert gets a savepoint, so
    the refusal leaves the caller's transaction usable; in autocommit the statement alone."""
    if job.unique_key is None:
        return statements.job_insert(job, events)
    while True:
        try:
            in_transaction = transaction.get_connection().in_atomic_block
            with transaction.atomic() if in_transaction else nullcontext():
                return statements.job_insert(job, events)
        except IntegrityError as exc:
            constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
            if constraint != UNIQUE_KEY_INDEX:
                raise
        live = (
            RunnerJob.objects.select_related("workspace", "created_by")
            .filter(
                workspace_id=job.workspace_id,
                unique_key=job.unique_key,
                status__in=ACTIVE_STATUSES,
            )
            .first()
        )
        if live is not None:
            raise DuplicateJobError(live)
        # The live job ended between the refused insert and this read: the key is free now.


def job_create(
    *,
    workspace: Workspace,
    spec: JobSpec,
    actor: str,
    created_by: User | None = None,
    idempotency_key: str | None = None,
) -> JobCreateResult:
    """Create a job (``pending``, or ``queued`` for an external type) with its event.

    With an ``idempotency_key`` a repeat from the same user returns the first job
    (``created=False``); the same key with a different body raises ``IdempotencyConflictError``.
    """
    spec.job_type()
    fingerprint = ""
    if idempotency_key:
        fingerprint = spec.fingerprint(workspace)
        existing = RunnerJob.objects.filter(
            created_by=created_by, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return _idempotent_replay(existing, fingerprint)
    try:
        # A key needs a savepoint: a lost race must leave the caller's transaction usable.
        with transaction.atomic() if idempotency_key else nullcontext():
            job = _job_insert(
                workspace=workspace,
                spec=spec,
                actor=actor,
                created_by=created_by,
                idempotency_key=idempotency_key or None,
                fingerprint=fingerprint,
            )
    except IntegrityError:
        # Two requests with one key raced; the unique constraint let exactly one insert win.
        if not idempotency_key:
            raise
        existing = RunnerJob.objects.filter(
            created_by=created_by, idempotency_key=idempotency_key
        ).first()
        if existing is None:
            raise
        return _idempotent_replay(existing, fingerprint)
    return JobCreateResult(job=job, created=True)


def _idempotent_replay(existing: RunnerJob, fingerprint: str) -> JobCreateResult:
    if existing.idempotency_fingerprint != fingerprint:
        raise IdempotencyConflictError()
    return JobCreateResult(job=existing, created=False)


def job_queue(*, job_id: uuid.UUID | str, actor: str) -> RunnerJob:
    """``pending`` -> ``queued``: the broker accepted the job's message."""

    def plan(job: RunnerJob) -> Change:
        # Only a pending job is queued here; running -> queued is a retry or a recovery.
        require_status(job.status, frozenset({S.PENDING}), "queue")
        return Change(E.JOB_QUEUED, {}, queue_fields())

    return job_update_optimistic(job_id=job_id, plan=plan, actor=actor)


def _start_change(job: RunnerJob, worker: str) -> Change:
    transition_check(job.status, S.RUNNING)
    attempt = job.attempts + 1
    fields = {
        "status": S.RUNNING,
        "attempts": attempt,
        "started_at": timezone.now(),
        **lease_fields(worker),
    }
    return Change(E.JOB_STARTED, {"attempt": attempt, "worker": worker}, fields)


def job_start(*, job_id: uuid.UUID | str, actor: str, worker: str) -> RunnerJob:
    """``queued`` -> ``running``: a new attempt with a fresh lease (``job.lease_token``)."""
    return job_update_locked(
        job_id=job_id, plan=lambda job: _start_change(job, worker), actor=actor
    )


def job_claim(
    *, types: list[str], worker: str, limit: int, actor: str, workspace_ids: list[int] | None = None
) -> list[RunnerJob]:
    """Atomically start up to ``limit`` due queued jobs of ``types`` for ``worker``; concurrent
    claimers skip each other's rows, so no job is claimed twice."""
    with transaction.atomic():
        jobs = jobs_lock_claimable(types=types, limit=limit, workspace_ids=workspace_ids)
        flow.slots_lock(jobs)
        return [
            job_write(job, _start_change(job, worker), actor)
            for job, type_cap in jobs
            if flow.slot_free(job, type_cap=type_cap)
        ]


def _lease_renewal() -> statements.Assignment:
    return statements.Assignment("lease_expires_at", "%s", (lease_expiry(),))


def job_claim_next(
    *,
    actor: str,
    worker: str,
    task_id: str,
    exclude_types: list[str],
    tolerance: float,
) -> RunnerJob | None:
    """A worker's claim, in one statement (looked again at when it finds nothing while runnable
    jobs remain): the best runnable job not of ``exclude_types`` (the
    coordinators' types; the dispatcher's choice, ``flow.pick_ctes``) goes ``queued`` ->
    ``running`` with a new attempt and a fresh lease, recorded as held by the Celery task
    ``task_id`` (so a hard time limit can find the job its process ran). ``tolerance`` seconds
    of clock skew count a job due that soon as due.
    None when nothing may start (every runnable job taken, or none waiting).

    One statement for a job without a concurrency key or a capped type; a keyed job's claim
    counts its key once more under the key's lock (a capped type's: its type, under the type's
    lock; ``flow.slot_held``) and is rolled back and tried again if another claimer took the
    last slot meanwhile."""
    for attempt in range(CLAIM_ATTEMPTS):
        if attempt:
            time.sleep(CLAIM_BACKOFF_SECONDS * 2 ** (attempt - 1))
        due = (exclude_types, timezone.now() + timedelta(seconds=tolerance))
        job = _claim_once(actor=actor, worker=worker, task_id=task_id, due=due)
        if job is not None:
            return job
        # Nothing claimed, but a bell may give up only when nothing is left to start: its
        # statement's snapshot may predate jobs committed since (their bells may have taken the
        # jobs this one saw), or its rows were held by claimers that will not take them (a lost
        # key slot). A fresh snapshot decides (docs/decisions/0140-dispatcher.md, "No bell lost").
        if not flow.runnable_exists(exclude_types=exclude_types):
            return None
    logger.info("claim: runnable jobs left to other claimers after %d attempts", CLAIM_ATTEMPTS)
    return None


def _claim_once(
    *, actor: str, worker: str, task_id: str, due: tuple[list[str], Any]
) -> RunnerJob | None:
    """One claim: the started job, or None (nothing unlocked was runnable in the statement's
    snapshot, or a keyed job's (capped type's) slot was taken meanwhile and the claim rolled
    back)."""
    # A transaction: a keyed job's claim holds its key's advisory lock until commit.
    with transaction.atomic():
        written = _claim_statement(actor=actor, worker=worker, task_id=task_id, due=due)
        if written is None:
            return None
        (type_cap,) = written.extra
        if not flow.slot_held(written.job, type_cap=type_cap):
            # Another claimer took the key's (the type's) last slot after this statement's
            # snapshot.
            transaction.set_rollback(True)
            return None
        events_committed_on_commit(written.events, workspace_id=written.job.workspace_id)
    metrics.job_changes_observed(
        job=written.job, event_types=[E.JOB_STARTED], actor=actor, transition=True
    )
    return written.job


def _claim_statement(
    *, actor: str, worker: str, task_id: str, due: tuple[list[str], Any]
) -> statements.Written | None:
    exclude_types, now = due
    lease = {**lease_fields(worker), "lease_task_id": task_id}
    ctes, cte_params = flow.pick_ctes(exclude_types=exclude_types, now=now)
    return statements.job_update_where(
        job_id=None,
        statuses=[S.QUEUED],
        lease_token=None,
        assignments=[
            statements.Assignment("status", "%s", (S.RUNNING,)),
            statements.Assignment("attempts", "attempts + 1"),
            statements.Assignment("started_at", "%s", (timezone.now(),)),
            *(statements.Assignment(name, "%s", (value,)) for name, value in lease.items()),
        ],
        event_type=E.JOB_STARTED,
        actor=actor,
        payload={"worker": worker},
        payload_from_row={"attempt": "attempts"},
        extra_where="id = (SELECT id FROM pick)",
        ctes=ctes,
        cte_params=cte_params,
        select_extra=("(SELECT type_cap FROM pick)",),
    )


def job_progress_update(
    *,
    job_id: uuid.UUID | str,
    progress: int,
    actor: str,
    message: str | None = None,
    lease_token: LeaseToken = None,
) -> RunnerJob:
    """Record a progress report of a running job in one conditional statement; the stored
    progress never decreases (``GREATEST``), and concurrent reports are never refused for
    contention: they wait for each other on the row lock."""
    if not 0 <= progress <= 100:
        raise JobInputError({"progress": ["Must be between 0 and 100."]})

    def refuse(job: RunnerJob) -> None:
        require_status(job.status, RUNNING_ONLY, "report progress of")

    return job_update_conditional(
        job_id=job_id,
        statuses=RUNNING_ONLY,
        lease_token=lease_token,
        refuse=refuse,
        assignments=[
            statements.Assignment("progress", "GREATEST(progress, %s)", (progress,)),
            _lease_renewal(),
        ],
        event_type=E.JOB_PROGRESS,
        actor=actor,
        payload={"message": message} if message else {},
        payload_from_row={"progress": "progress"},
    )


def _running_job_ends(
    *,
    job_id: uuid.UUID | str,
    status: JobStatus,
    assignments: list[statements.Assignment],
    event_type: EventType,
    payload: dict[str, Any],
    actor: str,
    lease_token: LeaseToken,
) -> RunnerJob:
    """``running`` -> ``status`` (completed or failed) in one conditional statement: the UPDATE
    takes the row lock, so of racing terminal reports exactly one ends the job; the attempt's
    lease is void from then on."""

    def refuse(job: RunnerJob) -> None:
        transition_check(job.status, status)

    return job_update_conditional(
        job_id=job_id,
        statuses=RUNNING_ONLY,
        lease_token=lease_token,
        refuse=refuse,
        assignments=[
            statements.Assignment("status", "%s", (status,)),
            *assignments,
            statements.Assignment("completed_at", "%s", (timezone.now(),)),
            statements.Assignment("lease_token", "NULL"),
            statements.Assignment("lease_expires_at", "NULL"),
        ],
        event_type=event_type,
        actor=actor,
        payload=payload,
        payload_from_row={"attempt": "attempts"},
    )


def job_complete(
    *, job_id: uuid.UUID | str, result: Any, actor: str, lease_token: LeaseToken = None
) -> RunnerJob:
    """``running`` -> ``completed`` with ``result``: exactly one of racing completions wins."""
    if error := stored_value_error(result, name="result"):
        raise JobInputError({"result": [error]})
    return _running_job_ends(
        job_id=job_id,
        status=S.COMPLETED,
        assignments=[
            statements.Assignment("result", "%s::jsonb", (json.dumps(result),)),
            statements.Assignment("progress", "100"),
        ],
        event_type=E.JOB_COMPLETED,
        payload={},
        actor=actor,
        lease_token=lease_token,
    )


def _fail_change(job: RunnerJob, error: str) -> Change:
    transition_check(job.status, S.FAILED)
    fields = {
        "status": S.FAILED,
        "error": error,
        "completed_at": timezone.now(),
        **LEASE_CLEARED,
    }
    return Change(E.JOB_FAILED, {"error": error, "attempt": job.attempts}, fields)


def job_fail(
    *, job_id: uuid.UUID | str, error: str, actor: str, lease_token: LeaseToken = None
) -> RunnerJob:
    """``running`` -> ``failed`` with ``error`` kept on the job (as ``job_complete``)."""
    return _running_job_ends(
        job_id=job_id,
        status=S.FAILED,
        assignments=[statements.Assignment("error", "%s", (error,))],
        event_type=E.JOB_FAILED,
        payload={"error": error},
        actor=actor,
        lease_token=lease_token,
    )


def job_attempt_failed(
    *,
    job_id: uuid.UUID | str,
    error: str,
    retry_delay: float | None,
    actor: str,
    lease_token: LeaseToken = None,
) -> RunnerJob:
    """An attempt raised. With a ``retry_delay`` (a transient error) and attempts left, the job
    goes back to ``queued``, due after the delay (``job.retry_scheduled``); otherwise it fails."""

    def plan(job: RunnerJob) -> Change:
        lease_check(job, lease_token)
        if retry_delay is None or job.attempts >= job.max_attempts:
            return _fail_change(job, error)
        transition_check(job.status, S.QUEUED)
        payload = {"attempt": job.attempts, "delay": retry_delay, "error": error}
        fields = {**queue_fields(retry_delay), "error": error, **LEASE_CLEARED}
        return Change(E.JOB_RETRY_SCHEDULED, payload, fields)

    return job_update_locked(job_id=job_id, plan=plan, actor=actor)


def _cancel_change(
    job: RunnerJob, event_extra: Mapping[str, Any] | None, now: datetime | None = None
) -> Change:
    transition_check(job.status, S.CANCELLED)
    fields = {"status": S.CANCELLED, "completed_at": now or timezone.now(), **LEASE_CLEARED}
    return Change(E.JOB_CANCELLED, {"from": job.status, **(event_extra or {})}, fields)


def job_cancel(
    *,
    job_id: uuid.UUID | str,
    actor: str,
    expected_version: int | None = None,
    event_extra: Mapping[str, Any] | None = None,
) -> RunnerJob:
    """``pending``/``queued``/``running`` -> ``cancelled``. A running handler sees it at its
    next progress check and stops; its lease is void from now on. ``event_extra`` goes into the
    event's payload (a bulk operation names itself there)."""
    return job_update_optimistic(
        job_id=job_id,
        plan=lambda job: _cancel_change(job, event_extra),
        actor=actor,
        expected_version=expected_version,
    )


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch service did: the jobs it changed, and why it left each other one."""

    changed: list[RunnerJob]
    refused: dict[uuid.UUID, JobServiceError]


def _jobs_write_planned(
    *, job_ids: Sequence[uuid.UUID], jobs: list[RunnerJob], plan: Plan, actor: str
) -> BatchOutcome:
    """``plan`` each locked job (the single-job service's own rule), then write the changes it
    allowed in one statement; a job it refused, or one that no longer exists, is left as is."""
    found = {job.pk for job in jobs}
    refused: dict[uuid.UUID, JobServiceError] = {
        job_id: JobNotFoundError() for job_id in job_ids if job_id not in found
    }
    writes: list[tuple[RunnerJob, Change]] = []
    for job in jobs:
        try:
            writes.append((job, plan(job)))
        except JobServiceError as exc:
            refused[job.pk] = exc
    jobs_write(writes, actor)
    return BatchOutcome(changed=[job for job, _ in writes], refused=refused)


def jobs_cancel(
    *, job_ids: Sequence[uuid.UUID], actor: str, event_extra: Mapping[str, Any] | None = None
) -> BatchOutcome:
    """``job_cancel`` for each of ``job_ids`` (same rule, event and payload), set-based: their
    rows locked in one statement, the cancellable ones cancelled with their events in another.
    Runs inside the caller's transaction (a bulk operation's batch)."""
    now = timezone.now()
    return _jobs_write_planned(
        job_ids=job_ids,
        jobs=jobs_lock(job_ids),
        plan=lambda job: _cancel_change(job, event_extra, now),
        actor=actor,
    )


def _retry_spec(old: RunnerJob, changes: Mapping[str, Any]) -> tuple[JobSpec, list[str]]:
    """The new job's spec: the old job's, with ``changes``; and the names of the fields whose
    value the changes really moved, in order."""
    unknown = sorted(set(changes) - RETRY_CHANGEABLE_FIELDS)
    if unknown:
        raise JobInputError({name: ["A retry cannot change this field."] for name in unknown})
    spec = JobSpec.of(old)
    changed = sorted(name for name, value in changes.items() if getattr(spec, name) != value)
    return replace(spec, **{name: changes[name] for name in changed}), changed


def _retry_change(
    old: RunnerJob,
    *,
    already_retried: bool,
    actor: str,
    created_by: User | None,
    changes: Mapping[str, Any] | None,
    event_extra: Mapping[str, Any] | None,
    insert: Callable[..., None],
) -> Change:
    """The rules of a retry, on the old job's locked row: its state, "a job is retried once",
    the new job's checks; the change's ``extra`` hands the new job's fields to ``insert``."""
    require_status(old.status, RETRYABLE_STATUSES, "retry")
    if already_retried:
        raise InvalidTransitionError(ALREADY_RETRIED)
    spec, changed = _retry_spec(old, changes or {})
    spec.job_type()
    extra = dict(event_extra or {})
    created_extra = {**extra, "changed": changed} if changes is not None else extra
    new_id = uuid.uuid4()

    def insert_new(old: RunnerJob) -> None:
        insert(
            job_id=new_id,
            workspace=old.workspace,
            spec=spec,
            actor=actor,
            created_by=created_by,
            retry_of=old,
            event_extra=created_extra,
        )

    return Change(E.JOB_RETRIED, {"retry_job_id": str(new_id), **extra}, extra=insert_new)


def job_retry(
    *,
    job_id: uuid.UUID | str,
    actor: str,
    created_by: User | None = None,
    expected_version: int | None = None,
    changes: Mapping[str, Any] | None = None,
    event_extra: Mapping[str, Any] | None = None,
) -> RunnerJob:
    """Make a new job from a failed or cancelled one (same type, payload, priority, tags and
    metadata, ``retry_of`` set); the old job gets ``job.retried`` naming the new one.

    ``changes`` (payload, priority, tags, metadata) replace the old job's values; the new job's
    ``job.created`` lists the fields they changed (``"changed"``). ``event_extra`` goes into the
    payload of both events (a bulk operation names itself there).

    A job is retried once: decided under the old job's row lock, so of two racing retries (API,
    admin, a bulk operation, anyone) exactly one makes a new job and the other gets
    ``InvalidTransitionError``."""
    created: list[RunnerJob] = []

    def plan(old: RunnerJob) -> Change:
        return _retry_change(
            old,
            already_retried=old.retries.exists(),
            actor=actor,
            created_by=created_by,
            changes=changes,
            event_extra=event_extra,
            insert=lambda **fields: created.append(_job_insert(**fields)),
        )

    job_update_locked(job_id=job_id, plan=plan, actor=actor, expected_version=expected_version)
    return created[-1]


def jobs_retry(
    *,
    job_ids: Sequence[uuid.UUID],
    actor: str,
    created_by: User | None = None,
    event_extra: Mapping[str, Any] | None = None,
) -> BatchOutcome:
    """``job_retry`` for each of ``job_ids`` (same rules, new jobs and events): the old rows
    locked and their earlier retries read once for the batch, the old jobs' ``job.retried`` in
    one statement, the new jobs and their events in another (a new job with a unique key is
    inserted as a single retry inserts it: the key's index decides). Runs inside the caller's
    transaction (a bulk operation's batch)."""
    olds = jobs_lock(job_ids)
    retried = set(
        RunnerJob.objects.filter(retry_of__in=[old.pk for old in olds]).values_list(
            "retry_of_id", flat=True
        )
    )
    news: list[NewJob] = []

    def insert(**fields: Any) -> None:
        new = _job_new(**fields)
        if new.job.unique_key is None:
            news.append(new)
        else:
            _new_job_insert(new, actor=actor)

    outcome = _jobs_write_planned(
        job_ids=job_ids,
        jobs=olds,
        plan=lambda old: _retry_change(
            old,
            already_retried=old.pk in retried,
            actor=actor,
            created_by=created_by,
            changes=None,
            event_extra=event_extra,
            insert=insert,
        ),
        actor=actor,
    )
    _jobs_insert(news, actor=actor)
    return outcome


def job_recover_lost(*, job_id: uuid.UUID | str, actor: str = "system") -> RunnerJob:
    """A running job whose lease expired (its worker died or stalled): back to ``queued`` while
    attempts remain, else ``failed``. Checked again under the row lock, so a report that renewed
    the lease in the meantime wins."""

    def plan(job: RunnerJob) -> Change:
        require_status(job.status, frozenset({S.RUNNING}), "recover")
        if job.lease_expires_at is not None and job.lease_expires_at > timezone.now():
            raise InvalidTransitionError("The job's lease has not expired.")
        outcome = "failed" if job.attempts >= job.max_attempts else "requeued"
        metrics.sweeper_recovery_observed(outcome=outcome)
        if outcome == "failed":
            return _fail_change(job, WORKER_LOST_ERROR)
        payload = {"reason": "lease_expired", "attempt": job.attempts}
        return requeue_change(payload)

    return job_update_locked(job_id=job_id, plan=plan, actor=actor)


def job_expire(*, job_id: uuid.UUID | str, actor: str = SYSTEM) -> RunnerJob:
    """``pending``/``queued`` -> ``expired``: the job was not started by its ``expires_at``
    (the sweeper's expiry pass). Checked again under the row lock, so a claim that started the
    job first wins, and a job whose expiry has not come is refused."""

    def plan(job: RunnerJob) -> Change:
        transition_check(job.status, S.EXPIRED)
        if job.expires_at is None or job.expires_at > timezone.now():
            raise InvalidTransitionError("The job has not expired.")
        fields = {"status": S.EXPIRED, "completed_at": timezone.now(), **LEASE_CLEARED}
        payload = {"from": job.status, "expires_at": job.expires_at.isoformat()}
        return Change(E.JOB_EXPIRED, payload, fields)

    return job_update_locked(job_id=job_id, plan=plan, actor=actor)


def attempt_deadline(job: RunnerJob) -> tuple[datetime, int] | None:
    """When the sweeper fails ``job``'s running attempt, and its time limit in seconds: the
    limit after its start (``registry.attempt_timeout``); for a Celery-run job a grace period
    later, since its worker interrupts it at the limit itself. None: no limit applies."""
    job_type = job_type_get(job.type)
    seconds = attempt_timeout(job_type, job.timeout_seconds)
    if seconds is None or job.started_at is None:
        return None
    external = job_type is not None and job_type.external
    grace = 0 if external else settings.RUNNER_JOB_HARD_TIME_LIMIT_GRACE_SECONDS
    return job.started_at + timedelta(seconds=seconds + grace), seconds


def job_time_out(*, job_id: uuid.UUID | str, actor: str = SYSTEM) -> RunnerJob:
    """A running attempt past its deadline (``attempt_deadline``: a claimed external job still
    running, or a Celery handler that outlived its own interruption) -> ``failed`` with "Time
    limit exceeded". Checked again under the row lock."""

    def plan(job: RunnerJob) -> Change:
        require_status(job.status, RUNNING_ONLY, "time out")
        deadline = attempt_deadline(job)
        if deadline is None or deadline[0] > timezone.now():
            raise InvalidTransitionError("The attempt is within its time limit.")
        return _fail_change(job, time_limit_error(deadline[1]))

    return job_update_locked(job_id=job_id, plan=plan, actor=actor)


def job_lease_renew(*, job_id: uuid.UUID | str, lease_token: uuid.UUID | str) -> datetime | None:
    """Extend a running job's lease (a worker's or coordinator's heartbeat) and return its new
    expiry. Not a change of the job's state, so no event and no version bump; None when the
    lease is no longer this attempt's."""
    expires_at = lease_expiry()
    renewed = RunnerJob.objects.filter(pk=job_id, status=S.RUNNING, lease_token=lease_token).update(
        lease_expires_at=expires_at
    )
    return expires_at if renewed else None
