"""Query filters of the job list and a job's events. A bad value is a 400 with field errors; an
empty one (``?status=``) filters nothing, as everywhere in django-filter. The job list refuses
query parameters it does not know (a typo would otherwise list every job); the same filters
select the jobs of a bulk operation."""

import builtins
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.http import QueryDict
from django_filters.fields import IsoDateTimeField
from drf_spectacular.contrib.django_filters import DjangoFilterExtension

from runner_jobs.labels import (
    METADATA_FILTER_PREFIX,
    TAG_PATTERN,
    metadata_errors,
    tag_error,
)
from runner_jobs.models import JobEvent, JobStatus, RunnerJob
from workspaces.models import Workspace

# Query parameters of the job list that are not filters.
LIST_PARAMETERS = frozenset({"cursor", "page_size", "format"})
UNKNOWN_FILTER = "Unknown filter. Filters: {names}, metadata.<key>."


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


def invalid(messages: list[str]) -> forms.ValidationError:
    """A form error whose messages quote client input: passed as a parameter, so a ``%`` in
    that input is never read as a format directive (Django and DRF both format messages)."""
    return forms.ValidationError(
        [
            forms.ValidationError("%(message)s", code="invalid", params={"message": message})
            for message in messages
        ]
    )


class RepeatedParameterWidget(forms.TextInput):
    """Every value of a repeated query parameter: ``?tag=a&tag=b``."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        return data.getlist(name) if hasattr(data, "getlist") else data.get(name)


class TagListField(forms.Field):
    widget = RepeatedParameterWidget

    def to_python(self, value: Any) -> list[str]:
        values = value if isinstance(value, list) else [value] if value else []
        return [v for v in values if v]

    def validate(self, value: list[str]) -> None:
        errors = [error for tag in value if (error := tag_error(tag))]
        if errors:
            raise invalid(errors)


class TagsFilter(django_filters.Filter):
    """Repeatable; jobs that have every tag given (``tags @> ARRAY[...]``, on a GIN index)."""

    field_class = TagListField

    def filter(self, qs: QuerySet[Any], value: list[str]) -> QuerySet[Any]:
        return qs.filter(tags__contains=value) if value else qs


class MetadataWidget(forms.TextInput):
    """Gathers every ``metadata.<key>`` parameter: ``{key: [values]}``."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        prefix = f"{name}."
        getlist = data.getlist if hasattr(data, "getlist") else lambda k: [data[k]]
        return {key[len(prefix) :]: getlist(key) for key in data if key.startswith(prefix)}


class MetadataField(forms.Field):
    widget = MetadataWidget

    def to_python(self, value: Any) -> dict[str, str]:
        pairs = value or {}
        repeated = sorted(key for key, values in pairs.items() if len(set(values)) > 1)
        if repeated:
            raise invalid([f"One value per metadata key (repeated: {', '.join(repeated)})."])
        return {key: values[-1] for key, values in pairs.items()}

    def validate(self, value: dict[str, str]) -> None:
        errors = metadata_errors(value)
        if errors:
            raise invalid(errors)


class MetadataFilter(django_filters.Filter):
    """``metadata.<key>=<value>``, repeatable with other keys; exact values, all of them
    (``metadata @> {...}``, on a GIN index with ``jsonb_path_ops``)."""

    field_class = MetadataField

    def filter(self, qs: QuerySet[Any], value: dict[str, str]) -> QuerySet[Any]:
        return qs.filter(metadata__contains=value) if value else qs


class RunnerJobFilter(django_filters.FilterSet):
    status = ChoiceInFilter(
        choices=JobStatus.choices, help_text="Comma-separated statuses, e.g. queued,running."
    )
    # At most the column's length: a longer value can match no job, and a bulk operation would
    # store it in its filter (400 with the field's error instead).
    type = django_filters.CharFilter(
        help_text="A job type, e.g. echo.", max_length=RunnerJob._meta.get_field("type").max_length
    )
    agent_task_id = django_filters.CharFilter(
        max_length=RunnerJob._meta.get_field("agent_task_id").max_length
    )
    workspace = django_filters.CharFilter(
        field_name="workspace__slug",
        help_text="A workspace slug.",
        max_length=Workspace._meta.get_field("slug").max_length,
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
    tag = TagsFilter(
        field_name="tags",
        help_text=f"Repeatable (`tag=a&tag=b`): jobs that have every one; `{TAG_PATTERN.pattern}`.",
    )
    metadata = MetadataFilter(
        help_text="`metadata.<key>=<value>`, repeatable: jobs whose metadata has every pair."
    )

    # Query parameters the list takes besides its filters; anything else is a 400.
    other_parameters = LIST_PARAMETERS

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
            "tag",
            "metadata",
        ]

    def get_form_class(self) -> builtins.type[forms.Form]:
        filterset = self

        class FilterForm(super().get_form_class()):  # type: ignore[misc]
            def clean(self) -> dict[str, Any]:
                cleaned: dict[str, Any] = super().clean()
                for name in filterset.unknown_parameters():
                    # Not a field of the form, so not through add_error (which refuses those).
                    self._errors[name] = self.error_class([filterset.unknown_message()])
                return cleaned

        return FilterForm

    def unknown_parameters(self) -> list[str]:
        known = (set(self.filters) - {"metadata"}) | self.other_parameters
        return sorted(
            name
            for name in self.data
            if name not in known and not name.startswith(METADATA_FILTER_PREFIX)
        )

    @classmethod
    def unknown_message(cls) -> str:
        names = ", ".join(name for name in cls.base_filters if name != "metadata")
        return UNKNOWN_FILTER.format(names=names)


class BulkJobFilter(RunnerJobFilter):
    """The filter of a bulk operation: the list's filters, no paging."""

    other_parameters = frozenset()


def filter_query(filters: Mapping[str, Any]) -> QueryDict:
    """A bulk operation's filter object as the query string it stands for: a list (``tag``, or
    ``status``) repeats the parameter; any other value is its text."""
    query = QueryDict(mutable=True)
    for name, value in filters.items():
        values = value if isinstance(value, list) else [value]
        if name == "status":
            values = [",".join(str(v) for v in values)]
        query.setlist(name, [v if isinstance(v, str) else str(v) for v in values])
    return query


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
        described = []
        for parameter in parameters:
            parameter["allowEmptyValue"] = True
            if parameter["name"] == "tag":
                parameter["schema"] = {
                    "type": "array",
                    "items": {"type": "string", "pattern": f"^{TAG_PATTERN.pattern}$"},
                }
                parameter["explode"] = True
            if parameter["name"] == "metadata":
                # Not a parameter of its own: ``metadata.<key>`` (in the list's description).
                continue
            described.append(parameter)
        return described
