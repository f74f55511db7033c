import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Func, Q, Value
from django.db.models.expressions import Expression
from django.db.models.functions import Cast, Coalesce, Now

from workspaces.models import Workspace


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    # Not started before its expires_at (a ttl_seconds on create): ended by the sweeper.
    EXPIRED = "expired", "Expired"


TERMINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING)


class RunnerJob(models.Model):
    """One background job. Fields only: every write goes through ``runner_jobs.services``.

    ``progress``, ``version`` and the lease fields change on every report, so they are kept out
    of every index: PostgreSQL can then update the row in place (HOT update).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="jobs")
    type = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    priority = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(0), MaxValueValidator(9)]
    )
    progress = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    payload = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # NULL, not "", when absent: the partial index and filters treat "no reference" as absent.
    agent_task_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runner_jobs",
    )
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    # When a queued job becomes due: now, or the end of a retry delay. The sweeper measures
    # "queued for too long" from here, not from queued_at.
    due_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    # Fenced lease of the current attempt (see services/leases in the README).
    lease_token = models.UUIDField(null=True, blank=True)
    lease_owner = models.CharField(max_length=255, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The Celery task whose attempt holds the lease: how a hard time limit, reported by the
    # worker's main process with only the task id, finds the job (a bell names no job).
    lease_task_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001

    # Idempotent create: one key per user; the fingerprint tells a repeat from a different body.
    # NULL when absent, so the unique constraint ignores jobs created without a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="")

    # The schedule that made the job, if one did. Indexed (partially) for the overlap check.
    schedule = models.ForeignKey(
        "Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        db_index=False,
    )

    # Labels for finding jobs again (SPEC §9; rules in runner_jobs.labels). ``db_default`` too, so
    # the column is added without a rewrite and rows inserted by SQL (seeding) get an empty value.
    tags = ArrayField(
        models.CharField(max_length=64),
        default=list,
        db_default=Value([], output_field=ArrayField(models.CharField(max_length=64))),
        blank=True,
    )
    metadata = models.JSONField(
        default=dict, db_default=Value({}, output_field=models.JSONField()), blank=True
    )

    # Flow control (SPEC §8): at most ``concurrency_limit`` jobs of one workspace and key run at
    # once; the dispatcher (services/flow.py) leaves the others queued. NULL when unset.
    concurrency_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    concurrency_limit = models.SmallIntegerField(null=True, blank=True)
    # Not started before this moment (its due_at starts there). NULL when unset.
    run_at = models.DateTimeField(null=True, blank=True)
    # While a job of the workspace with this key is live, a create with it is refused (409).
    unique_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    # A job not started by ``expires_at`` ends ``expired``: its due time (run_at, else its
    # creation) plus ``ttl_seconds``. NULL when unset.
    # Plain integers, not Positive*: a column CHECK would make adding it scan a live table; the
    # ranges are the service's rules (flow.limits_errors, flow.spec_errors).
    ttl_seconds = models.IntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Per-attempt time limit, overriding its type's (runner_jobs.registry). NULL when unset.
    timeout_seconds = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # List pages: a workspace's jobs newest first (cursor pagination on created_at).
            models.Index(fields=["workspace", "-created_at"], name="job_workspace_created_idx"),
            models.Index(fields=["-created_at"], name="job_created_idx"),
            models.Index(fields=["status", "type"], name="job_status_type_idx"),
            models.Index(
                fields=["agent_task_id"],
                name="job_agent_task_idx",
                condition=Q(agent_task_id__isnull=False),
            ),
            # Claims and the sweeper look only at live jobs: a small partial index.
            models.Index(
                fields=["type", "-priority", "created_at"],
                name="job_claimable_idx",
                condition=Q(status="queued"),
            ),
            # The dispatcher's claim (services/flow.py): its walk over (workspace, type) pairs
            # with queued jobs and each pair's head, so a paused or capped type's backlog is
            # skipped whole (decision 0141); also a workspace's queued jobs (explain's "ahead").
            models.Index(
                fields=["workspace", "type", "-priority", "created_at"],
                name="job_queued_workspace_type_idx",
                condition=Q(status="queued"),
            ),
            models.Index(
                fields=["workspace", "type"],
                name="job_running_workspace_idx",
                condition=Q(status="running"),
            ),
            models.Index(
                fields=["workspace", "concurrency_key"],
                name="job_running_key_idx",
                condition=Q(status="running", concurrency_key__isnull=False),
            ),
            # The sweeper's expiry pass: live jobs that carry an expiry, soonest first.
            models.Index(
                fields=["expires_at"],
                name="job_waiting_expiry_idx",
                condition=Q(status__in=["pending", "queued"], expires_at__isnull=False),
            ),
            models.Index(
                fields=["status"],
                name="job_active_idx",
                condition=Q(status__in=["pending", "queued", "running"]),
            ),
            # The admin dashboard: jobs finished in the last hours, by status and type, read
            # from the index alone. completed_at is written once, when the job ends.
            models.Index(
                fields=["completed_at", "status", "type"],
                name="job_finished_idx",
                condition=Q(completed_at__isnull=False),
            ),
            # A schedule's live jobs (overlap "skip") and its history, newest first.
            models.Index(
                fields=["schedule", "-created_at"],
                name="job_schedule_idx",
                condition=Q(schedule__isnull=False),
            ),
            # tag= and metadata.<key>= filters: containment (@>) on GIN indexes, so their cost
            # follows the number of matching jobs, not the size of the table
            # (docs/decisions/0130-tags-and-metadata.md).
            GinIndex(fields=["tags"], name="job_tags_gin_idx"),
            GinIndex(
                fields=["metadata"], name="job_metadata_gin_idx", opclasses=["jsonb_path_ops"]
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__gte=0, priority__lte=9), name="job_priority_range"
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0, progress__lte=100), name="job_progress_range"
            ),
            # Enforced by the database: of racing creates with one key exactly one inserts.
            models.UniqueConstraint(
                fields=["workspace", "unique_key"],
                name="job_unique_key_live",
                condition=Q(unique_key__isnull=False, status__in=["pending", "queued", "running"]),
            ),
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                name="job_idempotency_key_per_user",
                condition=Q(idempotency_key__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {str(self.id)[:8]} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class StepPhase(models.TextChoices):
    SETUP = "setup", "Setup"
    EXECUTION = "execution", "Execution"
    VALIDATION = "validation", "Validation"
    CLEANUP = "cleanup", "Cleanup"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


STEP_FINISHED_STATUSES = frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED})


class JobStep(models.Model):
    job = models.ForeignKey(RunnerJob, on_delete=models.CASCADE, related_name="steps")
    ordinal = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    phase = models.CharField(max_length=16, choices=StepPhase.choices, default=StepPhase.EXECUTION)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    output = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["job", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["job", "ordinal"], name="step_unique_ordinal"),
        ]

    def __str__(self) -> str:
        return f"{self.ordinal}. {self.name} ({self.status})"


class TransactionIdField(models.Field):
    """A PostgreSQL ``xid8``: a 64-bit transaction id, which never wraps around."""

    description = "PostgreSQL transaction id (xid8)"

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        return "xid8"

    def from_db_value(self, value: object, expression: object, connection: object) -> int | None:
        return None if value is None else int(str(value))

    def to_python(self, value: object) -> int | None:
        return None if value is None else int(str(value))

    def get_prep_value(self, value: object) -> str | None:
        # Sent as a string literal: PostgreSQL has no cast from integer to xid8.
        return None if value is None else str(int(str(value)))


# Where an event sits in the workspace feed: its transaction's id, then its own id. Events
# written before the xid column existed have none and count as transaction 0 (long committed).
# docs/decisions/0100-workspace-feed.md.
FEED_XID: Expression = Coalesce(
    "xid", Cast(Value("0"), output_field=TransactionIdField()), output_field=TransactionIdField()
)


class JobEvent(models.Model):
    """An append-only record of one change to a job, written by ``services.events.event_record``
    in the transaction of the change.

    ``timestamp`` is set by PostgreSQL (``STATEMENT_TIMESTAMP()``) at the INSERT, which every
    writer runs after taking the job's row lock, so for one job (timestamp, id) order and id
    order agree. See docs/decisions/0002-event-order.md. The table keeps the name it had when
    the model lived in ``job_events`` (docs/decisions/0090-app-layers.md).
    """

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(
        RunnerJob, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    step = models.ForeignKey(
        JobStep,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
    )
    type = models.CharField(max_length=64)
    timestamp = models.DateTimeField(db_default=Now())
    actor = models.CharField(max_length=255)
    payload = models.JSONField(default=dict, blank=True)
    # The id of the transaction that inserted the event, set by PostgreSQL for any INSERT: the
    # workspace feed serves events in (xid, id) order, only once no older transaction is
    # running (docs/decisions/0100-workspace-feed.md). NULL for events older than the column.
    xid = TransactionIdField(
        null=True, editable=False, db_default=Func(function="pg_current_xact_id")
    )

    class Meta:
        db_table = "job_events_jobevent"
        ordering = ["timestamp", "id"]
        indexes = [
            models.Index(fields=["job", "timestamp"], name="job_event_job_ts_idx"),
            models.Index(FEED_XID, F("id"), name="job_event_feed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.id}"


class ScheduleOverlap(models.TextChoices):
    ALLOW = "allow", "Allow"
    SKIP = "skip", "Skip while the previous job is live"


class Schedule(models.Model):
    """Creates a job from ``job`` (the create fields) on a cron or an interval. Written only by
    ``runner_jobs.services.schedules``; fired by the beat's ``schedules_fire`` task."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="schedules")
    name = models.CharField(max_length=200)
    # Exactly one of cron (five fields, read in ``timezone``) and interval_seconds.
    cron = models.CharField(max_length=200, blank=True, default="")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    job = models.JSONField(default=dict)
    overlap = models.CharField(
        max_length=8, choices=ScheduleOverlap.choices, default=ScheduleOverlap.ALLOW
    )
    paused = models.BooleanField(default=False)
    next_run_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runner_job_schedules",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "name"]
        indexes = [
            # The beat's query: the due schedules that are not paused.
            models.Index(fields=["next_run_at"], name="schedule_due_idx", condition=Q(paused=False))
        ]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="schedule_unique_name"),
            models.CheckConstraint(
                condition=(Q(cron="") & Q(interval_seconds__isnull=False))
                | (~Q(cron="") & Q(interval_seconds__isnull=True)),
                name="schedule_cron_xor_interval",
            ),
            models.CheckConstraint(
                condition=Q(interval_seconds__isnull=True) | Q(interval_seconds__gte=10),
                name="schedule_interval_min",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron or f'every {self.interval_seconds} s'})"


class WorkerKind(models.TextChoices):
    CELERY = "celery", "Celery worker"
    COORDINATOR = "coordinator", "Coordinator"


class Worker(models.Model):
    """A process that runs jobs: a Celery worker (its heartbeat) or a coordinator (its last
    claim). ``name`` is what the worker writes as a job's ``lease_owner``. Written only by
    ``runner_jobs.services.workers``."""

    kind = models.CharField(max_length=16, choices=WorkerKind.choices)
    name = models.CharField(max_length=255)
    hostname = models.CharField(max_length=255, blank=True, default="")
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    # Set by a worker that shuts down cleanly; a killed one just stops being seen.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "name"], name="worker_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class OperationAction(models.TextChoices):
    CANCEL = "cancel", "Cancel"
    RETRY = "retry", "Retry"


class OperationStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class Operation(models.Model):
    """A bulk cancel or retry of the jobs a filter matched when it was created (SPEC §9).

    The matched job ids are stored as ``OperationJob`` rows at creation, so the set is fixed;
    ``run_operation`` tasks work through them, deleting each batch's rows with the batch.
    Fields only: every write goes through ``runner_jobs.services.operations``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null for a staff action in the admin whose selection spans several workspaces.
    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.PROTECT, related_name="operations"
    )
    action = models.CharField(max_length=16, choices=OperationAction.choices)
    filter = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=OperationStatus.choices, default=OperationStatus.RUNNING
    )
    matched = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # The actor of every job change it makes (``user:alice``, ``staff:bob``).
    actor = models.CharField(max_length=255)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runner_job_operations",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When a batch last committed: a run that stalled (lost message, dead worker) is sent again.
    progressed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["workspace", "-created_at"], name="operation_workspace_idx"),
            models.Index(
                fields=["progressed_at"],
                name="operation_running_idx",
                condition=Q(status="running"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {str(self.id)[:8]} ({self.status})"

    @property
    def done(self) -> int:
        return self.succeeded + self.skipped + self.failed


class OperationJob(models.Model):
    """One job of an operation's fixed set, still to do: the batch that acts on it deletes the
    row in its transaction. ``job_id`` is not a foreign key: retention may delete the job
    meanwhile, and the operation then counts it as skipped."""

    id = models.BigAutoField(primary_key=True)
    operation = models.ForeignKey(
        Operation, on_delete=models.CASCADE, related_name="jobs", db_index=False
    )
    job_id = models.UUIDField()

    class Meta:
        constraints = [
            # Also the index the runners walk: an operation's jobs in job id order.
            models.UniqueConstraint(fields=["operation", "job_id"], name="operation_job_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.operation_id}: {self.job_id}"


# A type's cap on running jobs in a workspace (SPEC §8, "Type policies").
MAX_RUNNING_MAX = 1000


class JobTypePolicy(models.Model):
    """How a workspace runs one job type: ``paused`` (its queued jobs there do not start) and
    ``max_running`` (at most this many of them run at once; NULL: no cap). No row is the same as
    neither. Read by the dispatcher's predicate (services/flow.py); written only by
    ``runner_jobs.services.policies``."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="job_type_policies", db_index=False
    )
    type = models.CharField(max_length=64)
    paused = models.BooleanField(default=False)
    max_running = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(MAX_RUNNING_MAX)]
    )
    # Who changed it last, and when (``user:alice``, ``staff:bob``); every change is also logged.
    updated_by = models.CharField(max_length=255, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "type"]
        verbose_name = "job type policy"
        verbose_name_plural = "job type policies"
        constraints = [
            # Also the index the dispatcher's predicate probes for each candidate job.
            models.UniqueConstraint(fields=["workspace", "type"], name="job_type_policy_unique"),
            models.CheckConstraint(
                condition=Q(max_running__isnull=True)
                | Q(max_running__gte=1, max_running__lte=MAX_RUNNING_MAX),
                name="job_type_policy_max_running_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} in {self.workspace_id}"
