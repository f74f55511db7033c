"""The consumer REST API for jobs. Thin: validate, call one service, serialize.

Scoping: every job comes from ``jobs_for_user``, so another workspace's job is a 404. Roles: a
viewer reads; a member or admin also creates, cancels and retries (403 otherwise)."""

from typing import Any, cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.authentication import BaseAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from config.middleware import header_text
from runner_jobs import services
from runner_jobs.explain import job_explain
from runner_jobs.filters import JobEventFilter, RunnerJobFilter
from runner_jobs.http import if_match_version, with_etag
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.pagination import EventCursorPagination, JobCursorPagination
from runner_jobs.read_tokens import ReadTokenAuthentication, read_token_create
from runner_jobs.selectors import job_events, job_get_for_user, jobs_for_user
from runner_jobs.serializers import (
    BulkOperationSerializer,
    DuplicateJobSerializer,
    ErrorSerializer,
    ExplainSerializer,
    JobCreateSerializer,
    JobEventSerializer,
    JobRetrySerializer,
    OperationSerializer,
    ReadTokenCreateSerializer,
    ReadTokenSerializer,
    RunnerJobDetailSerializer,
    RunnerJobSerializer,
)
from workspaces.models import Workspace
from workspaces.selectors import (
    WRITE_ROLES,
    membership_for_slug,
    membership_role,
)

IDEMPOTENCY_KEY_MAX_LENGTH = 255
READ_ONLY_ROLE_MESSAGE = "Your role in this workspace lets you read jobs, not change them."


def can_write(user: AbstractBaseUser | AnonymousUser, workspace_id: int) -> bool:
    return membership_role(user, workspace_id) in WRITE_ROLES


def user_actor(user: AbstractBaseUser | AnonymousUser) -> str:
    return f"user:{user.get_username()}"


def request_user(request: Request) -> User:
    # Every view here requires IsAuthenticated, so the user is a real one, never anonymous.
    return cast(User, request.user)


class CanWriteJob(BasePermission):
    """Reads are for every member (scoping already hid other workspaces); writes need a member
    or admin role in the job's workspace."""

    message = READ_ONLY_ROLE_MESSAGE

    def has_object_permission(self, request: Request, view: APIView, obj: RunnerJob) -> bool:
        return request.method in SAFE_METHODS or can_write(request.user, obj.workspace_id)


def _idempotency_key(request: Request) -> str | None:
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    # The key as the client wrote it (the request guard refused one that is not UTF-8 text).
    key = header_text(raw) or ""
    if not (0 < len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH and key.isprintable()):
        raise ValidationError(
            {
                "Idempotency-Key": [
                    f"Must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable characters."
                ]
            }
        )
    return key


def api_error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


FIELD_ERRORS = OpenApiResponse(
    response={"type": "object", "additionalProperties": True},
    description="Bad input: DRF's field-error object (or detail and code).",
)
UNAUTHENTICATED = api_error("No valid `Authorization: Token <token>` (or session).")
UNAUTHENTICATED_OR_BAD_READ_TOKEN = api_error(
    "No valid credentials: a token, a session, or a read token for this job that is genuine, "
    "unexpired and whose creator may still read the job."
)
# The views a job's read token opens (besides the stream): its detail and its events.
WITH_READ_TOKENS: list[type[BaseAuthentication]] = [
    *cast(list[type[BaseAuthentication]], api_settings.DEFAULT_AUTHENTICATION_CLASSES),
    ReadTokenAuthentication,
]
NOT_FOUND = api_error("No such job in your workspaces.")
FORBIDDEN = api_error("Your role in the job's workspace is viewer.")
CONFLICT = api_error("`invalid_transition` (not allowed in its state) or `concurrent_update`.")
PRECONDITION_FAILED = api_error("`If-Match` names an older version of the job.")
TOO_LARGE = api_error("The request body is over the configured limit.")


def conditional_write_responses(success: int) -> dict[int, Any]:
    """The responses of a write on one job that honours ``If-Match`` (cancel, retry)."""
    return {
        success: RunnerJobSerializer,
        400: FIELD_ERRORS,
        401: UNAUTHENTICATED,
        403: FORBIDDEN,
        404: NOT_FOUND,
        409: CONFLICT,
        412: PRECONDITION_FAILED,
    }


IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description='Only act if the job is still at this version (its ETag, e.g. "3").',
)
ETAG = OpenApiParameter(
    "ETag",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[200, 201],
    description='The job\'s version, e.g. "3"; send it back in `If-Match`.',
)


@extend_schema(tags=["runner-jobs"])
class RunnerJobViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[RunnerJob],
):
    """Jobs of your workspaces: create, list, read, cancel and retry."""

    permission_classes = [IsAuthenticated, CanWriteJob]
    serializer_class = RunnerJobSerializer
    pagination_class = JobCursorPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = RunnerJobFilter
    # Any id reaches the view (DRF's default stops at a dot), so a bad one is the same JSON 404.
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[RunnerJob]:
        return jobs_for_user(self.request.user)

    def get_authenticators(self) -> list[BaseAuthentication]:
        # In a request this runs before ``self.action`` is set, so the method tells the action;
        # the schema generator sets the action and no request.
        action = getattr(self, "action", None)
        if action is None and self.request is not None:
            action = self.action_map.get((self.request.method or "").lower())
        if action == "retrieve":
            return [auth() for auth in WITH_READ_TOKENS]
        return super().get_authenticators()

    def get_object(self) -> RunnerJob:
        # Not filter_queryset: the list's query filters must not hide a job from its own URL.
        job = job_get_for_user(user=self.request.user, job_id=self.kwargs["pk"])
        self.check_object_permissions(self.request, job)
        return job

    def get_serializer_class(self) -> Any:
        return RunnerJobDetailSerializer if self.action == "retrieve" else RunnerJobSerializer

    def _job_response(self, job: RunnerJob, status_code: int = status.HTTP_200_OK) -> Response:
        response = Response(RunnerJobSerializer(job).data, status=status_code)
        if status_code == status.HTTP_201_CREATED:
            response["Location"] = self.reverse_action("detail", args=[job.pk])
        return with_etag(response, job)

    @extend_schema(
        summary="List jobs",
        description=(
            "Newest first, cursor-paginated. Besides the parameters below, "
            "`metadata.<key>=<value>` (repeatable, exact) keeps jobs whose metadata has every "
            "pair given. An unknown parameter is a 400."
        ),
        responses={200: RunnerJobSerializer(many=True), 400: FIELD_ERRORS, 401: UNAUTHENTICATED},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Read a job",
        description="The job with all its steps and its latest 100 events (oldest first).",
        parameters=[ETAG],
        responses={
            200: RunnerJobDetailSerializer,
            401: UNAUTHENTICATED_OR_BAD_READ_TOKEN,
            404: NOT_FOUND,
        },
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        job = self.get_object()
        return with_etag(Response(RunnerJobDetailSerializer(job).data), job)

    @extend_schema(
        summary="Create a job",
        description=(
            "201 with the new job, handed to the queue after commit. With an `Idempotency-Key`, "
            "a repeat from the same user returns the first job (200); the same key with a "
            "different body is a 422."
        ),
        request=JobCreateSerializer,
        parameters=[
            ETAG,
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Makes the create safe to repeat (1 to 255 printable characters).",
            ),
        ],
        responses={
            200: OpenApiResponse(RunnerJobSerializer, description="A repeat of a keyed create."),
            201: OpenApiResponse(RunnerJobSerializer, description="Created."),
            400: FIELD_ERRORS,
            401: UNAUTHENTICATED,
            403: FORBIDDEN,
            404: api_error("No such workspace among yours."),
            413: TOO_LARGE,
            409: OpenApiResponse(
                DuplicateJobSerializer,
                description="`duplicate_job`: a job with this unique_key is live; `job` is it.",
            ),
            422: api_error("`idempotency_conflict`: the key was used with a different body."),
        },
    )
    def create(self, request: Request) -> Response:
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        idempotency_key = _idempotency_key(request)
        workspace = self._writable_workspace(data["workspace"])
        result = services.job_create(
            workspace=workspace,
            spec=JobCreateSerializer.spec(data),
            actor=user_actor(request.user),
            created_by=request_user(request),
            idempotency_key=idempotency_key,
        )
        return self._job_response(
            result.job, status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )

    def _writable_workspace(self, slug: str) -> Workspace:
        """The workspace named in a create: 404 unless the user is a member, 403 for a viewer."""
        membership = membership_for_slug(self.request.user, slug)
        if membership is None:
            raise NotFound("No such workspace among yours.")
        if membership.role not in WRITE_ROLES:
            self.permission_denied(self.request, message=READ_ONLY_ROLE_MESSAGE)
        return membership.workspace

    @extend_schema(
        summary="Cancel a job",
        description="pending, queued or running → cancelled.",
        request=None,
        parameters=[IF_MATCH, ETAG],
        responses=conditional_write_responses(200),
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        job = services.job_cancel(
            job_id=self.get_object().pk,
            actor=user_actor(request.user),
            expected_version=if_match_version(request),
        )
        return self._job_response(job)

    @extend_schema(
        summary="Retry a job",
        description=(
            "From failed or cancelled: 201 with a new job (`retry_of` = this id), same type, "
            "payload, priority, tags and metadata. An optional body changes some of them "
            "(`payload`, `priority`, `tags`, `metadata`); the new job's `job.created` event "
            "lists the fields that changed (`changed`). A job is retried once."
        ),
        request=JobRetrySerializer,
        parameters=[IF_MATCH, ETAG],
        responses=conditional_write_responses(201),
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        serializer = JobRetrySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = services.job_retry(
            job_id=job.pk,
            actor=user_actor(request.user),
            created_by=request_user(request),
            expected_version=if_match_version(request),
            changes=serializer.validated_data or None,
        )
        return self._job_response(job, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Why isn't it running?",
        description=(
            "Whether the job may start now and, if not, why: each condition of the dispatcher's "
            "rule the job fails (`not_due`, `expired`, `type_paused`, `concurrency_limit`, "
            "`type_max_running`), evaluated by the same SQL the claims use; for a job that meets "
            "them all, what it waits for (`waiting_for_worker` with `ahead`, `no_workers`, "
            "`waiting_for_coordinator`); `terminal` once it has ended. A running job has no "
            "reasons."
        ),
        responses={200: ExplainSerializer, 401: UNAUTHENTICATED, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"], permission_classes=[IsAuthenticated])
    def explain(self, request: Request, pk: str) -> Response:
        return Response(ExplainSerializer(job_explain(self.get_object())).data)

    @extend_schema(
        summary="Make a read token",
        description=(
            "A signed token that reads this one job (its detail, events and event stream) and "
            "nothing else, for `ttl_seconds` (default 900, at most 86400), as "
            "`Authorization: Bearer <token>` or `?access_token=<token>`: for a browser page "
            "(`EventSource` cannot send headers). Any role that reads the job may make one; it "
            "stops working when it expires or when its creator leaves the job's workspace."
        ),
        request=ReadTokenCreateSerializer,
        responses={
            201: ReadTokenSerializer,
            400: FIELD_ERRORS,
            401: UNAUTHENTICATED,
            404: NOT_FOUND,
            413: TOO_LARGE,
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="read-token",
        # Reading is enough: a viewer may share what they can see.
        permission_classes=[IsAuthenticated],
    )
    def read_token(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        serializer = ReadTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, expires_at = read_token_create(
            job=job,
            user=request_user(request),
            ttl_seconds=serializer.validated_data["ttl_seconds"],
        )
        body = ReadTokenSerializer({"token": token, "expires_at": expires_at}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Cancel or retry jobs by filter",
        description=(
            "Starts a tracked bulk operation on the jobs of the workspace that the filter "
            "matches now (the set is fixed at this moment). 202 with the operation; follow it "
            "at its `Location` (`/api/v1/operations/<id>/`). Each job goes through the same "
            "service as a single cancel or retry, its event naming the operation; a job that "
            "cannot move is counted as skipped."
        ),
        request=BulkOperationSerializer,
        responses={
            202: OpenApiResponse(OperationSerializer, description="Started."),
            400: FIELD_ERRORS,
            401: UNAUTHENTICATED,
            403: FORBIDDEN,
            404: api_error("No such workspace among yours."),
            413: TOO_LARGE,
        },
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        serializer = BulkOperationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        operation = services.operation_create(
            workspace=self._writable_workspace(data["workspace"]),
            action=data["action"],
            filters=data["filter"],
            actor=user_actor(request.user),
            created_by=request_user(request),
        )
        response = Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)
        # The path, as SPEC §9 gives it (a relative reference is a valid Location, RFC 9110).
        response["Location"] = reverse("operation-detail", args=[operation.pk])
        return response


@extend_schema(
    tags=["runner-jobs"],
    summary="A job's events",
    description="Oldest first, cursor-paginated; `after` an event id, `type` one event type.",
    responses={
        200: JobEventSerializer(many=True),
        400: FIELD_ERRORS,
        401: UNAUTHENTICATED_OR_BAD_READ_TOKEN,
        404: NOT_FOUND,
    },
)
class JobEventListView(generics.ListAPIView[JobEvent]):
    """The events of one job of your workspaces."""

    authentication_classes = WITH_READ_TOKENS
    # For the schema only (its model); the real queryset is the job's, in get_queryset.
    queryset = JobEvent.objects.none()
    serializer_class = JobEventSerializer
    pagination_class = EventCursorPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = JobEventFilter

    def get_queryset(self) -> QuerySet[JobEvent]:
        return job_events(job=job_get_for_user(user=self.request.user, job_id=self.kwargs["pk"]))
