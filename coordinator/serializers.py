"""Bodies of the coordinator API. Shapes only; the services enforce the domain rules (the state
machine, leases, event types and sizes) and their refusals map to 400/409 the same way."""

from typing import Any

from rest_framework import serializers

from runner_jobs.models import JobStatus, StepPhase, StepStatus
from runner_jobs.registry import job_type_get
from runner_jobs.serializers import RunnerJobSerializer

CLAIM_LIMIT_MAX = 100


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer and nothing else: DRF's IntegerField would also take "50" and 50.0."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class LeaseReportSerializer(serializers.Serializer[Any]):
    """Every report may name the lease it holds; a token of an earlier attempt is refused."""

    lease_token = serializers.UUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The lease_token of your claim; a report without one is not fenced.",
    )


class LeasedJobSerializer(RunnerJobSerializer):
    """A job with the lease of the attempt just started: shown only to the one who started it
    (claim, or status ``running``), never on a plain read."""

    class Meta(RunnerJobSerializer.Meta):
        fields = [*RunnerJobSerializer.Meta.fields, "lease_token", "lease_expires_at"]
        read_only_fields = fields


class ClaimSerializer(serializers.Serializer[Any]):
    types = serializers.ListField(
        child=serializers.CharField(max_length=64), min_length=1, max_length=50
    )
    worker = serializers.CharField(
        max_length=255, required=False, help_text="Who runs the jobs; defaults to the key's name."
    )
    limit = serializers.IntegerField(min_value=1, max_value=CLAIM_LIMIT_MAX, default=1)

    def validate_types(self, types: list[str]) -> list[str]:
        for name in types:
            job_type = job_type_get(name)
            if job_type is None:
                raise serializers.ValidationError(f"Unknown job type {name!r}.")
            if not job_type.external:
                raise serializers.ValidationError(
                    f"{name!r} is run by Celery workers, not claimed by a coordinator."
                )
        return types


class ClaimResultSerializer(serializers.Serializer[Any]):
    jobs = LeasedJobSerializer(many=True)


class StatusReportSerializer(LeaseReportSerializer):
    status = serializers.ChoiceField(choices=JobStatus.choices)
    worker = serializers.CharField(
        max_length=255,
        required=False,
        help_text="For status running: who runs the job; defaults to the key's name.",
    )
    error = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="For status failed."
    )


class HeartbeatSerializer(serializers.Serializer[Any]):
    lease_token = serializers.UUIDField(help_text="The lease_token of your claim.")


class HeartbeatResultSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    lease_expires_at = serializers.DateTimeField()


class ProgressReportSerializer(LeaseReportSerializer):
    progress = StrictIntegerField(min_value=0, max_value=100)
    message = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)


class CompleteReportSerializer(LeaseReportSerializer):
    result = serializers.JSONField(required=False, allow_null=True, default=None)


class FailReportSerializer(LeaseReportSerializer):
    error = serializers.CharField()


class StepStartSerializer(LeaseReportSerializer):
    name = serializers.CharField(max_length=200)
    phase = serializers.ChoiceField(choices=StepPhase.choices, default=StepPhase.EXECUTION)


class StepReportSerializer(LeaseReportSerializer):
    status = serializers.ChoiceField(
        choices=[c for c in StepStatus.choices if c[0] != StepStatus.PENDING],
        help_text="running (with output: append it), completed, failed or skipped.",
    )
    output = serializers.CharField(required=False, allow_blank=True, default="")


class EventAppendSerializer(LeaseReportSerializer):
    type = serializers.CharField(
        max_length=64, help_text="A dotted lowercase name, e.g. agent.tool_call."
    )
    payload = serializers.JSONField(
        required=False, default=dict, help_text="A JSON object ≤ 64 KiB."
    )
    step = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=2**63 - 1
    )
