"""The coordinator API: thin views that check the key's scope, validate the body, call one
service with the key's actor, and serialize. Service refusals map to HTTP in
``runner_jobs.exceptions`` (404, 409 ``invalid_transition``/``stale_lease``, 400)."""

import uuid
from typing import Any

from django.db.models import prefetch_related_objects
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from runner_jobs import services
from runner_jobs.http import with_etag
from runner_jobs.models import RunnerJob, WorkerKind
from runner_jobs.serializers import (
    DuplicateJobSerializer,
    ErrorSerializer,
    JobCreateSerializer,
    JobStepSerializer,
    RunnerJobDetailSerializer,
    RunnerJobSerializer,
)

from .authentication import CoordinatorKeyAuthentication, HasCoordinatorKey, request_key
from .models import CoordinatorKey
from .selectors import (
    job_get_for_key,
    job_id_for_key,
    key_workspace_ids,
    key_workspace_slugs,
    workspaces_for_key,
)
from .serializers import (
    ClaimResultSerializer,
    ClaimSerializer,
    CompleteReportSerializer,
    EventAppendSerializer,
    FailReportSerializer,
    HeartbeatResultSerializer,
    HeartbeatSerializer,
    LeasedJobSerializer,
    ProgressReportSerializer,
    StatusReportSerializer,
    StepReportSerializer,
    StepStartSerializer,
)

# Refusals of a report on one job (the refusals every operation shares are added to the schema
# by config.schema). 404: the job does not exist or is outside the key's workspaces.
CONFLICT = OpenApiResponse(
    ErrorSerializer,
    description="`invalid_transition` (not allowed in the job's state), `stale_lease` (the "
    "lease_token is an earlier attempt's) or `concurrent_update`.",
)


def report_responses(success: Any, status_code: int = 200) -> dict[int, Any]:
    return {status_code: success, 409: CONFLICT}


def _valid(serializer_class: type[serializers.Serializer[Any]], request: Request) -> Any:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class CoordinatorViewSet(viewsets.ViewSet):
    """Coordinator keys only: no consumer token or session is accepted here."""

    authentication_classes = [CoordinatorKeyAuthentication]
    permission_classes = [HasCoordinatorKey]


class CoordinatorHealthView(CoordinatorViewSet):
    @extend_schema(
        responses=inline_serializer(
            "CoordinatorHealth",
            {
                "status": serializers.CharField(),
                "key": serializers.CharField(),
                "workspaces": serializers.ListField(child=serializers.CharField(), allow_null=True),
            },
        )
    )
    def health(self, request: Request) -> Response:
        """The key works: its name, and the workspaces it is limited to (null: every one; empty:
        a limited key whose workspaces are all gone, which sees nothing)."""
        key = request_key(request)
        return Response({"status": "ok", "key": key.name, "workspaces": key_workspace_slugs(key)})


class CoordinatorJobViewSet(CoordinatorViewSet):
    # Never used to fetch jobs (every lookup is scoped by the key in ``_job``); it tells the
    # schema generator that ``{id}`` is a job's UUID.
    queryset = RunnerJob.objects.none()

    @property
    def key(self) -> CoordinatorKey:
        return request_key(self.request)

    @property
    def actor(self) -> str:
        return self.key.actor

    def _job(self, pk: str) -> RunnerJob:
        """The job, or a 404 when it does not exist or the key may not touch it."""
        return job_get_for_key(key=self.key, job_id=pk)

    def _job_id(self, pk: str) -> uuid.UUID:
        """The job's id, or a 404 as ``_job``: a report's services read and lock the job
        themselves, so the scope check builds no model."""
        return job_id_for_key(key=self.key, job_id=pk)

    def _job_response(
        self, job: RunnerJob, *, serializer_class: type[RunnerJobSerializer] = RunnerJobSerializer
    ) -> Response:
        return with_etag(Response(serializer_class(job).data), job)

    @extend_schema(
        request=JobCreateSerializer,
        responses={201: RunnerJobSerializer, 409: DuplicateJobSerializer},
    )
    def create(self, request: Request) -> Response:
        """Create a job in one of the key's workspaces (an external type is queued at once)."""
        data = _valid(JobCreateSerializer, request)
        workspace = workspaces_for_key(self.key).filter(slug=data["workspace"]).first()
        if workspace is None:
            raise serializers.ValidationError({"workspace": ["No such workspace."]})
        job = services.job_create(
            workspace=workspace,
            spec=JobCreateSerializer.spec(data),
            actor=self.actor,
        ).job
        response = self._job_response(job)
        response.status_code = status.HTTP_201_CREATED
        return response

    @extend_schema(responses=RunnerJobDetailSerializer)
    def retrieve(self, request: Request, pk: str) -> Response:
        """The job with its steps and latest 100 events."""
        job = self._job(pk)
        return with_etag(Response(RunnerJobDetailSerializer(job).data), job)

    @extend_schema(request=ClaimSerializer, responses=ClaimResultSerializer)
    @action(detail=False, methods=["post"])
    def claim(self, request: Request) -> Response:
        """Start up to ``limit`` queued jobs of ``types`` (highest priority, then oldest, first)
        for ``worker``; each comes with the ``lease_token`` its reports must carry."""
        data = _valid(ClaimSerializer, request)
        worker = data.get("worker", self.key.name)
        # The coordinator's heartbeat is its last claim (GET /api/v1/workers/).
        services.worker_seen(kind=WorkerKind.COORDINATOR, name=worker)
        jobs = services.job_claim(
            types=data["types"],
            worker=worker,
            limit=data["limit"],
            actor=self.actor,
            workspace_ids=key_workspace_ids(self.key),
        )
        # One query each for the jobs' workspaces and creators, not two per job.
        prefetch_related_objects(jobs, "workspace", "created_by")
        return Response({"jobs": LeasedJobSerializer(jobs, many=True).data})

    @extend_schema(
        request=StatusReportSerializer,
        responses={
            **report_responses(LeasedJobSerializer),
            409: OpenApiResponse(
                ErrorSerializer,
                description=f"{CONFLICT.description} For `running`: `not_runnable` when the "
                "dispatcher would not start the job now (run_at ahead, expired, its concurrency "
                "key or type at its limit, its type paused); `explain` gives the reasons.",
            ),
        },
    )
    @action(detail=True, methods=["post"], url_path="status")
    def status_report(self, request: Request, pk: str) -> Response:
        """Move the job to ``status`` under its row lock. ``running`` (from queued) starts a new
        attempt and returns its ``lease_token``, if the dispatcher's rule lets the job start now
        (the rule a claim obeys); ``queued`` (from running) hands the job back."""
        job_id = self._job_id(pk)
        data = _valid(StatusReportSerializer, request)
        job = services.job_status_report(
            job_id=job_id,
            status=data["status"],
            actor=self.actor,
            worker=data.get("worker", self.key.name),
            lease_token=data["lease_token"],
            error=data["error"],
        )
        return self._job_response(job, serializer_class=LeasedJobSerializer)

    @extend_schema(
        request=ProgressReportSerializer, responses=report_responses(RunnerJobSerializer)
    )
    @action(detail=True, methods=["post"])
    def progress(self, request: Request, pk: str) -> Response:
        """Report progress (0-100; the stored value never decreases). Renews the lease."""
        job_id = self._job_id(pk)
        data = _valid(ProgressReportSerializer, request)
        job = services.job_progress_update(
            job_id=job_id,
            progress=data["progress"],
            message=data["message"] or None,
            actor=self.actor,
            lease_token=data["lease_token"],
        )
        return self._job_response(job)

    @extend_schema(
        request=HeartbeatSerializer,
        responses={
            200: HeartbeatResultSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="`stale_lease`: not the job's current lease."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def heartbeat(self, request: Request, pk: str) -> Response:
        """Extend the lease of a running job without reporting anything: no event, no new
        version. 409 ``stale_lease`` when the token is not the job's current lease."""
        job_id = self._job_id(pk)
        data = _valid(HeartbeatSerializer, request)
        expires_at = services.job_lease_renew(job_id=job_id, lease_token=data["lease_token"])
        if expires_at is None:
            raise services.StaleLeaseError()
        return Response(
            HeartbeatResultSerializer({"id": job_id, "lease_expires_at": expires_at}).data
        )

    @extend_schema(
        request=CompleteReportSerializer, responses=report_responses(RunnerJobSerializer)
    )
    @action(detail=True, methods=["post"])
    def complete(self, request: Request, pk: str) -> Response:
        """Complete the running job with ``result``, under its row lock: exactly once."""
        job_id = self._job_id(pk)
        data = _valid(CompleteReportSerializer, request)
        job = services.job_complete(
            job_id=job_id, result=data["result"], actor=self.actor, lease_token=data["lease_token"]
        )
        return self._job_response(job)

    @extend_schema(request=FailReportSerializer, responses=report_responses(RunnerJobSerializer))
    @action(detail=True, methods=["post"])
    def fail(self, request: Request, pk: str) -> Response:
        """Fail the running job with ``error``, under its row lock."""
        job_id = self._job_id(pk)
        data = _valid(FailReportSerializer, request)
        job = services.job_fail(
            job_id=job_id, error=data["error"], actor=self.actor, lease_token=data["lease_token"]
        )
        return self._job_response(job)

    @extend_schema(request=StepStartSerializer, responses=report_responses(JobStepSerializer, 201))
    @action(detail=True, methods=["post"])
    def steps(self, request: Request, pk: str) -> Response:
        """Start the job's next step. Renews the lease."""
        job_id = self._job_id(pk)
        data = _valid(StepStartSerializer, request)
        step = services.step_start(
            job_id=job_id,
            name=data["name"],
            phase=data["phase"],
            actor=self.actor,
            lease_token=data["lease_token"],
        )
        return Response(JobStepSerializer(step).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=StepReportSerializer, responses=report_responses(JobStepSerializer))
    @action(detail=True, methods=["patch"], url_path=r"steps/(?P<step_id>\d+)")
    def step_report(self, request: Request, pk: str, step_id: str) -> Response:
        """Finish a running step (completed, failed, skipped) or append to its output (running).
        Renews the lease."""
        job_id = self._job_id(pk)
        data = _valid(StepReportSerializer, request)
        step = services.step_finish(
            job_id=job_id,
            step_id=int(step_id),
            status=data["status"],
            output=data["output"],
            actor=self.actor,
            lease_token=data["lease_token"],
        )
        return Response(JobStepSerializer(step).data)

    @extend_schema(
        request=EventAppendSerializer, responses=report_responses(RunnerJobSerializer, 201)
    )
    @action(detail=True, methods=["post"])
    def events(self, request: Request, pk: str) -> Response:
        """Append a custom event (a dotted lowercase type, payload ≤ 64 KiB) to a job that has
        not ended; returns the job, whose version the event bumped."""
        job_id = self._job_id(pk)
        data = _valid(EventAppendSerializer, request)
        job = services.event_append(
            job_id=job_id,
            type=data["type"],
            payload=data["payload"],
            step_id=data["step"],
            actor=self.actor,
            lease_token=data["lease_token"],
        )
        response = self._job_response(job)
        response.status_code = status.HTTP_201_CREATED
        return response
