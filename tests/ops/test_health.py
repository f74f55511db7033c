"""Liveness and readiness, with a broker of our own that we stop and start."""

import time

import pytest
from django.db import OperationalError
from django.test import Client, override_settings
from django.urls import path

from chaos.servers import ThrowawayRedis
from config import ops

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_dependencies(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_ok_with_database_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_names_the_stopped_broker_then_recovers(client, throwaway_redis: ThrowawayRedis):
    with override_settings(REDIS_URL=throwaway_redis.url):
        assert client.get("/readyz").status_code == 200

        throwaway_redis.stop()
        started = time.monotonic()
        response = client.get("/readyz")
        assert time.monotonic() - started < ops.READINESS_TIMEOUT_SECONDS + 0.5
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "not_ready"
        assert body["detail"] == "Unavailable: broker."
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["broker"] == "error"

        throwaway_redis.start()
        response = client.get("/readyz")
        assert response.status_code == 200, response.json()


def test_readyz_gives_up_on_a_hanging_dependency_within_its_timeout(client, monkeypatch):
    monkeypatch.setattr(ops, "READINESS_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setitem(ops.READINESS_CHECKS, "database", lambda: time.sleep(1))
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 0.9
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "timed out after 0.2 s", "broker": "ok"}
    assert response.json()["detail"] == "Unavailable: database."


def test_readyz_deadline_covers_all_checks_together(client, monkeypatch):
    monkeypatch.setattr(ops, "READINESS_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setitem(ops.READINESS_CHECKS, "database", lambda: time.sleep(1))
    monkeypatch.setitem(ops.READINESS_CHECKS, "broker", lambda: time.sleep(1))
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 0.55
    assert response.json()["detail"] == "Unavailable: database, broker."


def test_ops_endpoints_refuse_writes(client):
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405


def broken_view(request):
    raise ValueError("not a database problem")


def lost_database_view(request):
    # What a query raises once PostgreSQL is gone (the real outage: test_database_outage.py).
    raise OperationalError("connection failed: server closed the connection unexpectedly")


urlpatterns = [path("broken/", broken_view), path("lost/", lost_database_view)]


@override_settings(ROOT_URLCONF=__name__)
def test_other_errors_are_left_to_django():
    client = Client(raise_request_exception=False)
    assert client.get("/broken/").status_code == 500


@override_settings(ROOT_URLCONF=__name__)
def test_a_lost_database_is_a_503_in_the_api_error_shape():
    response = Client(raise_request_exception=False).get("/lost/")
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The database is unavailable; try again shortly.",
        "code": "unavailable",
    }
    assert response["Retry-After"] == "5"
