"""``/api/v1/job-types/``: every registered job type as a workspace runs it, and its policy there
(SPEC §8, "Type policies"). Any role in the workspace reads; its admins change the policy
(members and viewers 403). Thin: validate, call ``services.policies``, serialize."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from runner_jobs.models import MAX_RUNNING_MAX
from runner_jobs.selectors import job_type_states
from runner_jobs.serializers import UnknownFieldsRefused
from runner_jobs.services.policies import UNSET, job_type_policy_update
from runner_jobs.views import FIELD_ERRORS, UNAUTHENTICATED, api_error, user_actor
from workspaces.models import Membership, Workspace
from workspaces.selectors import membership_for_slug

ADMINS_ONLY_MESSAGE = "Only the workspace's admins change its job type policies."
NOT_FOUND = api_error("No such workspace among yours, or no such job type.")


class JobTypeSerializer(serializers.Serializer[Any]):
    """A ``JobTypeState``: a registered type, its policy in the workspace and its live jobs."""

    name = serializers.CharField()
    external = serializers.BooleanField(help_text="Claimed by coordinators, not Celery workers.")
    paused = serializers.BooleanField(help_text="Its queued jobs in the workspace do not start.")
    max_running = serializers.IntegerField(
        allow_null=True, help_text="At most this many run at once in the workspace; null: no cap."
    )
    queued = serializers.IntegerField(help_text="Its queued jobs in the workspace.")
    running = serializers.IntegerField(help_text="Its running jobs in the workspace.")


class JobTypeQuerySerializer(serializers.Serializer[Any]):
    workspace = serializers.CharField(max_length=64, help_text="A workspace slug.")


class JobTypePolicySerializer(JobTypeQuerySerializer, UnknownFieldsRefused):
    """The body of a policy change: the fields given change, the others stay; any other key is
    refused (400), so a misspelt field never reads as a change that did nothing."""

    paused = serializers.BooleanField(required=False)
    max_running = serializers.IntegerField(
        min_value=1, max_value=MAX_RUNNING_MAX, allow_null=True, required=False
    )


def _membership(request: Request, slug: str) -> Membership:
    membership = membership_for_slug(request.user, slug)
    if membership is None:
        raise NotFound("No such workspace among yours.")
    return membership


def _state(workspace: Workspace, name: str) -> dict[str, Any]:
    (state,) = job_type_states(workspace=workspace, name=name)
    return JobTypeSerializer(state).data


@extend_schema(tags=["job-types"])
class JobTypeViewSet(viewsets.ViewSet):
    """Job types of a workspace, and their policies there."""

    permission_classes = [IsAuthenticated]
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    @extend_schema(
        summary="List job types",
        description=(
            "Every registered type, with its policy in the workspace (`paused`, `max_running`) "
            "and its `queued` and `running` jobs there. Any role in the workspace."
        ),
        parameters=[
            OpenApiParameter(
                "workspace", OpenApiTypes.STR, required=True, description="A workspace slug."
            )
        ],
        responses={
            200: JobTypeSerializer(many=True),
            400: FIELD_ERRORS,
            401: UNAUTHENTICATED,
            404: api_error("No such workspace among yours."),
        },
    )
    def list(self, request: Request) -> Response:
        query = JobTypeQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        workspace = _membership(request, query.validated_data["workspace"]).workspace
        states = job_type_states(workspace=workspace)
        return Response(JobTypeSerializer(states, many=True).data)

    @extend_schema(
        summary="Change a job type's policy in a workspace",
        description=(
            "`paused: true` keeps the type's queued jobs in the workspace from starting (creates "
            "still work); `paused: false` starts them within about two seconds. `max_running` "
            "caps its running jobs there (null: no cap). Workspace admins only."
        ),
        request=JobTypePolicySerializer,
        responses={
            200: JobTypeSerializer,
            400: FIELD_ERRORS,
            401: UNAUTHENTICATED,
            403: api_error("Your role in the workspace is not admin."),
            404: NOT_FOUND,
        },
    )
    def partial_update(self, request: Request, name: str) -> Response:
        body = JobTypePolicySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        membership = _membership(request, data["workspace"])
        if membership.role != Membership.Role.ADMIN:
            raise PermissionDenied(ADMINS_ONLY_MESSAGE)
        job_type_policy_update(
            workspace=membership.workspace,
            type=name,
            actor=user_actor(request.user),
            paused=data.get("paused", UNSET),
            max_running=data.get("max_running", UNSET),
        )
        return Response(_state(membership.workspace, name))
