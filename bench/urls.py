from django.urls import include, path

from bench.views import baseline_insert

urlpatterns = [
    path("bench/insert/", baseline_insert, name="bench-insert"),
    path("", include("config.urls")),
]

handler404 = "runner_jobs.http.not_found"
