from django.urls import path
from rest_framework.routers import SimpleRouter

from job_events.feed import WorkspaceEventListView, workspace_event_stream
from job_events.views import WebhookEndpointViewSet, job_event_stream

router = SimpleRouter()
router.register("webhooks", WebhookEndpointViewSet, basename="webhook")

# Included at /api/v1/ before the consumer API, so its router does not shadow the stream.
urlpatterns = [
    path("runner-jobs/<uuid:pk>/events/stream/", job_event_stream, name="job-event-stream"),
    path("events/stream/", workspace_event_stream, name="workspace-event-stream"),
    path("events/", WorkspaceEventListView.as_view(), name="workspace-events"),
    *router.urls,
]
