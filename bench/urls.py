from django.urls import include, path

from bench.views import baseline_insert
from config.urls import handler400, handler403, handler404, handler500

urlpatterns = [
    path("bench/insert/", baseline_insert, name="bench-insert"),
    path("", include("config.urls")),
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
