"""Query filters of the job list and a job's events. A bad value is a 400 with field errors; an
empty one (``?status=``) filters nothing, as everywhere in django-filter."""

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField
from drf_spectacular.contrib.django_filters import DjangoFilterExtension

from runner_jobs.models import JobEvent, JobStatus, RunnerJob


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """A comma-separated list, each item one of the choices: ``status=queued,running``."""


class EventIdFilter(django_filters.NumberFilter):
    """An event id: a whole number in bigint's range (NumberFilter alone takes decimals)."""

    field_class = forms.IntegerField


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, turned into UTC here: PostgreSQL refuses offsets beyond ±15:59, and a date at
    the edge of the calendar may not exist in UTC at all; both are the client's 400."""

    def to_python(self, value: Any) -> datetime | None:
        parsed: datetime | None = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise forms.ValidationError("Out of the supported date range.", code="invalid") from exc


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class RunnerJobFilter(django_filters.FilterSet):
    status = ChoiceInFilter(
        choices=JobStatus.choices, help_text="Comma-separated statuses, e.g. queued,running."
    )
    type = django_filters.CharFilter(help_text="A job type, e.g. echo.")
    agent_task_id = django_filters.CharFilter()
    workspace = django_filters.CharFilter(
        field_name="workspace__slug", help_text="A workspace slug."
    )
    created_after = UtcIsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="ISO 8601; inclusive."
    )
    created_before = UtcIsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="ISO 8601; exclusive."
    )
    retry_of = django_filters.UUIDFilter(
        field_name="retry_of_id", help_text="Jobs that retry this job id."
    )

    class Meta:
        model = RunnerJob
        fields = [
            "status",
            "type",
            "agent_task_id",
            "workspace",
            "created_after",
            "created_before",
            "retry_of",
        ]


class JobEventFilter(django_filters.FilterSet):
    after = EventIdFilter(
        field_name="id",
        lookup_expr="gt",
        min_value=0,
        max_value=2**63 - 1,
        help_text="Only events after this event id.",
    )
    type = django_filters.CharFilter(help_text="An event type, e.g. job.progress.")

    class Meta:
        model = JobEvent
        fields = ["after", "type"]


class EmptyMeansUnfilteredExtension(DjangoFilterExtension):
    """The schema says what django-filter does: an empty query value is allowed and ignored.
    (drf-spectacular picks the extension of highest priority for DjangoFilterBackend.)"""

    priority = 1

    def get_schema_operation_parameters(
        self, auto_schema: Any, *args: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(
            auto_schema, *args, **kwargs
        )
        for parameter in parameters:
            parameter["allowEmptyValue"] = True
        return parameters
