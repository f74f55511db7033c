"""Consumer API routes, included under ``/api/v1/``. Only ``events/`` is routed below a job, so
``runner-jobs/<id>/events/stream/`` stays free for the event stream's own view."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from runner_jobs.job_type_views import JobTypeViewSet
from runner_jobs.operation_views import OperationViewSet
from runner_jobs.schedule_views import ScheduleViewSet
from runner_jobs.views import JobEventListView, RunnerJobViewSet
from runner_jobs.worker_views import WorkerListView

router = DefaultRouter()
# No ``.json`` twins of every route: one URL per resource, in the schema too.
router.include_format_suffixes = False
router.register("runner-jobs", RunnerJobViewSet, basename="runner-job")
router.register("schedules", ScheduleViewSet, basename="schedule")
router.register("operations", OperationViewSet, basename="operation")
router.register("job-types", JobTypeViewSet, basename="job-type")

urlpatterns = [
    path("workers/", WorkerListView.as_view(), name="workers"),
    path("runner-jobs/<str:pk>/events/", JobEventListView.as_view(), name="runner-job-events"),
    *router.urls,
]
