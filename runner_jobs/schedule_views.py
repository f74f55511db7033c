"""``/api/v1/schedules/``: jobs made on a cron or an interval (SPEC §9). Thin: validate, call one
service of ``runner_jobs.services.schedules``, serialize. Any member reads; members and admins
write (viewers 403); another workspace's schedule is a 404."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from runner_jobs.errors import JobInputError
from runner_jobs.models import Schedule, ScheduleOverlap
from runner_jobs.serializers import ErrorSerializer, JobCreateSerializer, RunnerJobSerializer
from runner_jobs.services.jobs import JobSpec
from runner_jobs.services.schedules import (
    INTERVAL_MAX_SECONDS,
    INTERVAL_MIN_SECONDS,
    ScheduleNotFoundError,
    Timing,
    schedule_create,
    schedule_delete,
    schedule_trigger,
    schedule_update,
)
from runner_jobs.views import CanWriteJob, can_write
from workspaces.models import Workspace
from workspaces.selectors import workspaces_for_user

TIMING_FIELDS = ("cron", "interval_seconds", "timezone")


class ScheduleJobSerializer(JobCreateSerializer):
    """The job a schedule makes: the create fields, but the workspace is the schedule's."""

    workspace = None  # type: ignore[assignment]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        # On a PATCH the parent validates the job again, whole (ScheduleSerializer.validate).
        if not getattr(self.root, "partial", False):
            try:
                self.spec(attrs).job_type()
            except JobInputError as exc:
                raise serializers.ValidationError(exc.errors) from exc
        return attrs


class ScheduleSerializer(serializers.ModelSerializer[Schedule]):
    workspace = serializers.SlugField(
        source="workspace.slug", max_length=64, help_text="The workspace's slug (set at create)."
    )
    created_by: "serializers.SlugRelatedField[User]" = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    cron = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Five fields (minute hour day month weekday), read in `timezone`.",
    )
    interval_seconds = serializers.IntegerField(
        min_value=INTERVAL_MIN_SECONDS,
        max_value=INTERVAL_MAX_SECONDS,
        required=False,
        allow_null=True,
        help_text="Instead of `cron`: a run every this many seconds.",
    )
    timezone = serializers.CharField(max_length=64, required=False, help_text="IANA; UTC default.")
    job = ScheduleJobSerializer(help_text="The create fields of the jobs it makes.")
    overlap = serializers.ChoiceField(choices=ScheduleOverlap.choices, required=False)

    class Meta:
        model = Schedule
        fields = [
            "id",
            "workspace",
            "name",
            "cron",
            "interval_seconds",
            "timezone",
            "job",
            "overlap",
            "paused",
            "next_run_at",
            "last_run_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "next_run_at", "last_run_at", "created_at", "updated_at"]

    def timing(self, data: dict[str, Any]) -> Timing | None:
        """The timing the request asks for, completed from the schedule on a PATCH (a new cron
        replaces an interval and the other way round); None when it changes none of it."""
        if self.instance is not None and not set(TIMING_FIELDS) & set(data):
            return None
        old = Timing.of(self.instance) if self.instance is not None else Timing()
        cron = data.get("cron", "" if "interval_seconds" in data else old.cron)
        interval = data.get("interval_seconds", None if "cron" in data else old.interval_seconds)
        return Timing(cron or "", interval, data.get("timezone", old.timezone))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        slug = attrs.get("workspace", {}).get("slug")
        if self.instance is not None and slug not in (None, self.instance.workspace.slug):
            raise serializers.ValidationError({"workspace": ["A schedule stays in its workspace."]})
        timing = self.timing(attrs)
        if timing is not None and (errors := timing.errors()):
            raise serializers.ValidationError(errors)
        if self.partial and "job" in attrs:
            # A PATCH replaces the whole job, so its defaults apply (a partial nested
            # serializer would leave them out).
            job = ScheduleJobSerializer(data=self.initial_data["job"])
            if not job.is_valid():
                raise serializers.ValidationError({"job": job.errors})
            attrs["job"] = job.validated_data
        return attrs


def _spec(data: dict[str, Any]) -> JobSpec | None:
    return ScheduleJobSerializer.spec(data["job"]) if "job" in data else None


def _user(request: Request) -> User:
    # IsAuthenticated holds for every action, so the user is a real one.
    user: User = request.user  # type: ignore[assignment]
    return user


def workspace_for_write(user: AbstractBaseUser | AnonymousUser, slug: str) -> Workspace:
    """The workspace ``slug`` of ``user``: 404 unless a member, 403 for a viewer."""
    workspace = workspaces_for_user(user).filter(slug=slug).first()
    if workspace is None:
        raise NotFound("No such workspace among yours.")
    if not can_write(user, workspace.pk):
        raise PermissionDenied(CanWriteJob.message)
    return workspace


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


FIELD_ERRORS = OpenApiResponse(
    response={"type": "object", "additionalProperties": True},
    description="Bad input: DRF's field-error object.",
)
UNAUTHENTICATED = error_response("No valid `Authorization: Token <token>` (or session).")
FORBIDDEN = error_response("Your role in the schedule's workspace is viewer.")
NOT_FOUND = error_response("No such schedule (or workspace) among yours.")
READ_ERRORS = {401: UNAUTHENTICATED, 404: NOT_FOUND}
WRITE_ERRORS = {400: FIELD_ERRORS, 401: UNAUTHENTICATED, 403: FORBIDDEN, 404: NOT_FOUND}


@extend_schema_view(
    list=extend_schema(
        summary="List schedules",
        responses={200: ScheduleSerializer(many=True), 401: UNAUTHENTICATED},
    ),
    retrieve=extend_schema(
        summary="Read a schedule", responses={200: ScheduleSerializer, **READ_ERRORS}
    ),
    create=extend_schema(
        summary="Create a schedule", responses={201: ScheduleSerializer, **WRITE_ERRORS}
    ),
    partial_update=extend_schema(
        summary="Change a schedule",
        description="A new timing, or `paused: false`, sets `next_run_at` from now.",
        responses={200: ScheduleSerializer, **WRITE_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a schedule",
        description="Its jobs stay, with `schedule` null.",
        responses={204: None, 401: UNAUTHENTICATED, 403: FORBIDDEN, 404: NOT_FOUND},
    ),
)
@extend_schema(tags=["schedules"])
class ScheduleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[Schedule],
):
    """Schedules of your workspaces."""

    permission_classes = [IsAuthenticated, CanWriteJob]
    serializer_class = ScheduleSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    # Any id reaches the view, so a malformed one is the same JSON 404 as an unknown one.
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Schedule]:
        return (
            Schedule.objects.filter(workspace__in=workspaces_for_user(self.request.user))
            .select_related("workspace", "created_by")
            .order_by("workspace__slug", "name")
        )

    def get_object(self) -> Schedule:
        try:
            schedule = self.get_queryset().get(pk=self.kwargs["pk"])
        except (Schedule.DoesNotExist, DjangoValidationError) as exc:
            # Unknown, another workspace's, or not even a UUID: the same 404.
            raise ScheduleNotFoundError() from exc
        self.check_object_permissions(self.request, schedule)
        return schedule

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = ScheduleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        workspace = workspace_for_write(request.user, data["workspace"]["slug"])
        timing = serializer.timing(data)
        assert timing is not None
        schedule = schedule_create(
            workspace=workspace,
            name=data["name"],
            timing=timing,
            spec=ScheduleJobSerializer.spec(data["job"]),
            overlap=data.get("overlap", ScheduleOverlap.ALLOW),
            paused=data.get("paused", False),
            created_by=_user(request),
        )
        return Response(ScheduleSerializer(schedule).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        instance = self.get_object()
        serializer = ScheduleSerializer(instance, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        schedule = schedule_update(
            schedule_id=instance.pk,
            name=data.get("name"),
            timing=serializer.timing(data),
            spec=_spec(data),
            overlap=data.get("overlap"),
            paused=data.get("paused"),
        )
        return Response(ScheduleSerializer(schedule).data)

    def perform_destroy(self, instance: Schedule) -> None:
        schedule_delete(schedule_id=instance.pk)

    @extend_schema(
        summary="Run a schedule now",
        description="One job now, whatever the timing, pause or overlap; `next_run_at` stays.",
        request=None,
        responses={201: RunnerJobSerializer, 401: UNAUTHENTICATED, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["post"])
    def trigger(self, request: Request, pk: str) -> Response:
        job = schedule_trigger(schedule_id=self.get_object().pk)
        return Response(RunnerJobSerializer(job).data, status=status.HTTP_201_CREATED)
