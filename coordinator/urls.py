from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import CoordinatorHealthView, CoordinatorJobViewSet

app_name = "coordinator"

router = SimpleRouter()
router.register("jobs", CoordinatorJobViewSet, basename="job")

urlpatterns = [
    path("health/", CoordinatorHealthView.as_view({"get": "health"}), name="health"),
    *router.urls,
]
