"""``GET /api/v1/workers/``: the Celery workers and coordinators that run jobs, for staff."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from runner_jobs.models import WorkerKind
from runner_jobs.schedule_views import UNAUTHENTICATED, error_response
from runner_jobs.workers import workers_list


class WorkerSerializer(serializers.Serializer[Any]):
    """A ``WorkerState``."""

    name = serializers.CharField(source="worker.name", help_text="The jobs' `lease_owner`.")
    kind = serializers.ChoiceField(source="worker.kind", choices=WorkerKind.choices)
    hostname = serializers.CharField(source="worker.hostname")
    pid = serializers.IntegerField(source="worker.pid", allow_null=True)
    started_at = serializers.DateTimeField(source="worker.started_at")
    last_seen_at = serializers.DateTimeField(
        source="worker.last_seen_at", help_text="Last heartbeat (a coordinator: its last claim)."
    )
    alive = serializers.BooleanField(help_text="Seen within a lease and not stopped.")
    running = serializers.ListField(
        child=serializers.UUIDField(), help_text="Its running jobs' ids."
    )


class WorkerListView(APIView):
    """Every known worker, alive or not."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["workers"],
        summary="List workers",
        responses={
            200: WorkerSerializer(many=True),
            401: UNAUTHENTICATED,
            403: error_response("Staff users only."),
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(WorkerSerializer(workers_list(), many=True).data)
