"""Input and output shapes of the job APIs (consumer and coordinator). Shapes only: domain rules
(is the type registered, is the payload small enough) belong to ``runner_jobs.services``."""

import dataclasses
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField, empty
from rest_framework.relations import PKOnlyObject

from runner_jobs.labels import MAX_METADATA_KEYS, MAX_TAGS, METADATA_VALUE_MAX_LENGTH, TAG_PATTERN
from runner_jobs.models import JobEvent, JobStep, Operation, OperationAction, RunnerJob
from runner_jobs.read_tokens import TTL_DEFAULT_SECONDS, TTL_MAX_SECONDS
from runner_jobs.selectors import job_events_latest
from runner_jobs.services import flow
from runner_jobs.services.flow import CONCURRENCY_KEY_MAX_LENGTH, CONCURRENCY_LIMIT_MAX
from runner_jobs.services.jobs import JobSpec
from workspaces.models import Workspace

DETAIL_EVENTS_LIMIT = 100
# The model's columns: a larger value would overflow them (a 500), so it is refused as input.
MAX_ATTEMPTS_LIMIT = 100
JOB_SPEC_FIELDS = tuple(field.name for field in dataclasses.fields(JobSpec))


class ErrorSerializer(serializers.Serializer[Any]):
    """Every refusal that is not a field error: ``{"detail", "code"}``."""

    detail = serializers.CharField()
    code = serializers.CharField()


class JobStepSerializer(serializers.ModelSerializer[JobStep]):
    class Meta:
        model = JobStep
        fields = [
            "id",
            "job",
            "ordinal",
            "name",
            "phase",
            "status",
            "output",
            "started_at",
            "completed_at",
            "duration_ms",
        ]
        read_only_fields = fields


class JobEventSerializer(serializers.ModelSerializer[JobEvent]):
    class Meta:
        model = JobEvent
        fields = ["id", "job", "step", "type", "timestamp", "actor", "payload"]
        read_only_fields = fields


class BuiltOnceSerializer(serializers.ModelSerializer[Any]):
    """A read-only serializer whose fields are built once per class. DRF builds a model
    serializer's fields from the model for every instance, the largest CPU cost of a small
    response; these fields hold no per-request state, so one set serves every request."""

    _built: ClassVar[dict[type, list[serializers.Field[Any, Any, Any, Any]]]] = {}

    def to_representation(self, instance: Any) -> dict[str, Any]:
        fields = self._built.get(type(self))
        if fields is None:
            fields = self._built[type(self)] = list(type(self)()._readable_fields)
        data: dict[str, Any] = {}
        for field in fields:
            try:
                attribute = field.get_attribute(instance)
            except SkipField:
                continue
            value = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            name = str(field.field_name)
            data[name] = None if value is None else field.to_representation(attribute)
        return data


class RunnerJobSerializer(BuiltOnceSerializer):
    """A job as every API shows it: the fields of SPEC §3, no lease or idempotency internals."""

    workspace: "serializers.SlugRelatedField[Workspace]" = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, help_text="The workspace's slug."
    )
    created_by: "serializers.SlugRelatedField[User]" = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Who created the job; null when a coordinator did.",
    )

    class Meta:
        model = RunnerJob
        fields = [
            "id",
            "workspace",
            "type",
            "status",
            "priority",
            "progress",
            "payload",
            "result",
            "error",
            "agent_task_id",
            "attempts",
            "max_attempts",
            "retry_of",
            "schedule",
            "tags",
            "metadata",
            "created_by",
            "version",
            "created_at",
            "queued_at",
            "started_at",
            "completed_at",
            "concurrency_key",
            "concurrency_limit",
            "unique_key",
            "run_at",
            "ttl_seconds",
            "expires_at",
            "timeout_seconds",
        ]
        read_only_fields = fields


class RunnerJobDetailSerializer(RunnerJobSerializer):
    """A job with all its steps (by ordinal) and its latest 100 events (oldest first)."""

    steps = JobStepSerializer(many=True, read_only=True)
    events = serializers.SerializerMethodField()

    class Meta(RunnerJobSerializer.Meta):
        fields = [*RunnerJobSerializer.Meta.fields, "steps", "events"]
        read_only_fields = fields

    @extend_schema_field(JobEventSerializer(many=True))
    def get_events(self, job: RunnerJob) -> list[dict[str, Any]]:
        events = job_events_latest(job=job, limit=DETAIL_EVENTS_LIMIT)
        return list(JobEventSerializer(events, many=True).data)


def labels_field(**kwargs: Any) -> "serializers.ListField":
    """``tags``: a list of strings. Whitespace is kept, so a tag with spaces is refused by the
    service's rule (runner_jobs.labels), not silently trimmed."""
    return serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text=(
            f"At most {MAX_TAGS} tags, each matching `{TAG_PATTERN.pattern}` in full; "
            "list filters find jobs that have all the tags asked for."
        ),
        **({"default": list} | kwargs),
    )


def metadata_field(**kwargs: Any) -> "serializers.DictField":
    """``metadata``: an object of strings to strings (the limits are the service's rule)."""
    return serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text=(
            f"At most {MAX_METADATA_KEYS} string keys to string values of at most "
            f"{METADATA_VALUE_MAX_LENGTH} characters; `metadata.<key>=<value>` filters the list."
        ),
        **({"default": dict} | kwargs),
    )


class DuplicateJobSerializer(ErrorSerializer):
    """409 ``duplicate_job``: the live job holding the create's ``unique_key``."""

    job = RunnerJobSerializer()


def run_at_field(**kwargs: Any) -> "serializers.DateTimeField":
    return serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="ISO 8601; the job waits queued and does not start before it.",
        **kwargs,
    )


class JobCreateSerializer(serializers.Serializer[Any]):
    """The body of a create: shapes only. The service checks the type and the payload's size
    (``JobInputError``, also a 400)."""

    workspace = serializers.SlugField(max_length=64, help_text="The workspace's slug.")
    type = serializers.CharField(max_length=64, help_text="A registered job type.")
    payload = serializers.DictField(
        required=False, default=dict, help_text="The job's input, a JSON object (≤ 256 KiB)."
    )
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    agent_task_id = serializers.CharField(
        max_length=255, required=False, allow_null=True, default=None
    )
    max_attempts = serializers.IntegerField(
        min_value=1,
        max_value=MAX_ATTEMPTS_LIMIT,
        required=False,
        allow_null=True,
        default=None,
        help_text="Defaults to the type's limit, else 3.",
    )
    tags = labels_field()
    metadata = metadata_field()
    concurrency_key = serializers.CharField(
        max_length=CONCURRENCY_KEY_MAX_LENGTH,
        required=False,
        allow_null=True,
        default=None,
        help_text="At most concurrency_limit jobs of the workspace with this key run at once.",
    )
    concurrency_limit = serializers.IntegerField(
        min_value=1,
        max_value=CONCURRENCY_LIMIT_MAX,
        required=False,
        allow_null=True,
        default=None,
        help_text="1-1000, default 1; only with concurrency_key.",
    )
    unique_key = serializers.CharField(
        max_length=CONCURRENCY_KEY_MAX_LENGTH,
        required=False,
        allow_null=True,
        default=None,
        help_text="While a job of the workspace with this key is live, a create is a 409.",
    )
    run_at = run_at_field(default=None)
    ttl_seconds = serializers.IntegerField(
        min_value=1,
        max_value=flow.TTL_MAX_SECONDS,
        required=False,
        allow_null=True,
        default=None,
        help_text="1 s - 30 days: a job not started this long after it became due (run_at, else "
        "now) ends `expired` (expires_at).",
    )
    timeout_seconds = serializers.IntegerField(
        min_value=1,
        max_value=settings.RUNNER_JOB_MAX_TIMEOUT_SECONDS,
        required=False,
        allow_null=True,
        default=None,
        help_text="Per-attempt time limit, overriding the type's: an attempt running longer "
        "fails with 'Time limit exceeded'.",
    )

    @staticmethod
    def spec(data: dict[str, Any]) -> JobSpec:
        """The new job's fields from the validated body (every field but ``workspace``)."""
        return JobSpec(**{name: data[name] for name in JOB_SPEC_FIELDS})


class ReadTokenCreateSerializer(serializers.Serializer[Any]):
    """The body of ``POST /runner-jobs/<id>/read-token/`` (optional)."""

    ttl_seconds = serializers.IntegerField(
        min_value=1,
        max_value=TTL_MAX_SECONDS,
        default=TTL_DEFAULT_SECONDS,
        help_text=f"How long the token works, in seconds (at most {TTL_MAX_SECONDS}).",
    )


class ReadTokenSerializer(serializers.Serializer[Any]):
    """A new read token: send it as ``Authorization: Bearer <token>`` or ``?access_token=``."""

    token = serializers.CharField()
    expires_at = serializers.DateTimeField()


class UnknownFieldsRefused(serializers.Serializer[Any]):
    """A body whose keys must all be fields: any other key is a 400 naming it, never silently
    ignored (a misspelt field would otherwise be a change that does nothing)."""

    unknown_field_message = "Unknown field."

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: [self.unknown_field_message] for name in unknown}
            )
        return attrs


class JobRetrySerializer(UnknownFieldsRefused):
    """The optional body of a retry: the fields the new job takes instead of the old job's.
    Only the fields given change; the new job's ``job.created`` event lists those that did. A
    field a retry cannot change (type, workspace, ...) is refused."""

    unknown_field_message = "A retry cannot change this field."

    payload = serializers.DictField(required=False, help_text="A new input (≤ 256 KiB).")
    priority = serializers.IntegerField(min_value=0, max_value=9, required=False)
    tags = labels_field(default=empty)
    metadata = metadata_field(default=empty)
    run_at = run_at_field(default=empty)


class OperationSerializer(serializers.ModelSerializer[Operation]):
    """A bulk operation and how far it got (SPEC §9)."""

    workspace: "serializers.SlugRelatedField[Workspace]" = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    created_by: "serializers.SlugRelatedField[User]" = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Operation
        fields = [
            "id",
            "workspace",
            "action",
            "filter",
            "status",
            "matched",
            "succeeded",
            "skipped",
            "failed",
            "created_by",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class BulkOperationSerializer(serializers.Serializer[Any]):
    """The body of ``POST /runner-jobs/bulk/``."""

    workspace = serializers.SlugField(max_length=64, help_text="The workspace's slug.")
    action = serializers.ChoiceField(choices=OperationAction.choices)
    filter = serializers.DictField(
        help_text=(
            "Any filters of the job list: status, type, tag (a list), metadata.<key>, "
            "created_after, created_before, agent_task_id, retry_of. The jobs they match now "
            "are the operation's, fixed."
        ),
    )


class ExplainReasonSerializer(serializers.Serializer[Any]):
    """One reason a job does not run (SPEC §9); the fields after ``detail`` come with the codes
    they belong to."""

    code = serializers.ChoiceField(
        choices=[
            "terminal",
            "not_due",
            "expired",
            "type_paused",
            "concurrency_limit",
            "type_max_running",
            "waiting_for_worker",
            "no_workers",
            "waiting_for_coordinator",
        ]
    )
    detail = serializers.CharField()
    due_at = serializers.DateTimeField(required=False, allow_null=True, help_text="not_due")
    run_at = serializers.DateTimeField(required=False, allow_null=True, help_text="not_due")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text="expired")
    key = serializers.CharField(required=False, help_text="concurrency_limit")
    limit = serializers.IntegerField(required=False, help_text="concurrency_limit")
    max_running = serializers.IntegerField(required=False, help_text="type_max_running")
    running = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        help_text="concurrency_limit, type_max_running: the jobs holding the slots",
    )
    ahead = serializers.IntegerField(
        required=False,
        help_text="waiting_for_worker: the jobs of its workspace that start first, counted up to "
        "1000 (1000 means 1000 or more)",
    )
    last_claim_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="waiting_for_coordinator"
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # Only the fields of the reason's code: a null field means "none", not "not this code".
        shown = super().to_representation(instance)
        return {name: value for name, value in shown.items() if name in instance}


class ExplainSerializer(serializers.Serializer[Any]):
    """``GET /runner-jobs/<id>/explain/``: may the job start now, and if it does not, why."""

    job = serializers.UUIDField(source="job.pk")
    status = serializers.CharField(source="job.status")
    runnable = serializers.BooleanField()
    reasons = ExplainReasonSerializer(many=True)
