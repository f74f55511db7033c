"""The live event stream of a job (Server-Sent Events) and the webhooks API."""

import uuid
from functools import partial
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from job_events import herald
from job_events.models import WebhookEndpoint
from job_events.serializers import (
    WebhookEndpointCreatedSerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
)
from job_events.sse import Batch, sse_frame, sse_stream
from job_events.stream_access import refusal
from runner_jobs.selectors import job_events_after, jobs_for_user
from runner_jobs.serializers import JobEventSerializer
from workspaces.models import Membership
from workspaces.selectors import workspaces_for_user

# Events read per query; a stream that is far behind catches up in batches of this size.
STREAM_BATCH_SIZE = 500


def _job_stream_read(job_id: uuid.UUID, *, after: int) -> Batch:
    """The job's next events after ``after`` as SSE frames; ended once the terminal one is read."""
    batch = job_events_after(job_id=job_id, after=after, limit=STREAM_BATCH_SIZE)
    frames = [
        sse_frame(event.pk, event.type, JobEventSerializer(event).data) for event in batch.events
    ]
    full = len(frames) == STREAM_BATCH_SIZE
    # Fewer than a full batch from an ended job: its terminal event has been read too.
    return Batch(frames=frames, more=full, ended=batch.job_ended and not full)


def _job_not_found() -> JsonResponse:
    return refusal(404, "not_found", "No such job.")


# Token-authenticated and read-only: exempt from CSRF so a POST gets its 405, not a 403.
@csrf_exempt
async def job_event_stream(request: HttpRequest, pk: uuid.UUID) -> HttpResponseBase:
    """``GET /api/v1/runner-jobs/{id}/events/stream/``: the job's events as Server-Sent Events,
    from the first (or after ``Last-Event-ID`` / ``?after=``) until the job's terminal event;
    204 once there is nothing left to send (a browser's ``EventSource`` then stops).

    An async view, served by the ASGI web tier: an open stream costs a coroutine, not a thread
    (docs/decisions/0050-serving-streams.md); the machinery is ``job_events.sse``.
    """
    return await sse_stream(
        request,
        readable=lambda user: jobs_for_user(user).filter(pk=pk).exists(),
        hidden=_job_not_found,
        read=partial(_job_stream_read, pk),
        wakeup_key=str(pk),
    )


class WebhookEndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[WebhookEndpoint],
):
    """``/api/v1/webhooks/``: a workspace admin's endpoints. The secret is in the create
    response only."""

    queryset = WebhookEndpoint.objects.none()

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        admin_of = workspaces_for_user(self.request.user, roles=(Membership.Role.ADMIN,))
        return WebhookEndpoint.objects.filter(workspace__in=admin_of).select_related("workspace")

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "create":
            return WebhookEndpointCreateSerializer
        return WebhookEndpointSerializer

    @extend_schema(responses={201: WebhookEndpointCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workspace = serializer.validated_data["workspace"]
        user: User = request.user  # type: ignore[assignment]
        admin_of = workspaces_for_user(user, roles=(Membership.Role.ADMIN,))
        if not admin_of.filter(pk=workspace.pk).exists():
            raise PermissionDenied("Only the workspace's admins manage its webhooks.")
        try:
            endpoint = herald.webhook_endpoint_create(
                workspace=workspace,
                url=serializer.validated_data["url"],
                event_types=serializer.validated_data["event_types"],
                created_by=user,
            )
        except DjangoValidationError as exc:
            # The model's rules the serializer cannot see (the endpoints cap), as field errors.
            raise ValidationError(exc.message_dict) from exc
        return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=201)

    def perform_destroy(self, instance: WebhookEndpoint) -> None:
        herald.webhook_endpoint_delete(endpoint=instance)
