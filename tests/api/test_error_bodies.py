"""Every 4xx and 5xx of the API is JSON with a ``code``, whoever refuses: a view, DRF, Django's
own handlers, or an unexpected fault (500); and no error page shows where services live."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404
from django.test import RequestFactory, override_settings
from django.views.debug import ExceptionReporter
from rest_framework.test import APIClient

from config import errors
from runner_jobs import services
from tests.api.conftest import token_client
from tests.coordinator.conftest import BASE, key_client, make_key
from tests.factories import UserFactory, job_in_state

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/runner-jobs/"
MISSING = "00000000-0000-0000-0000-000000000000"


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == code
    assert body["detail"]


@pytest.mark.parametrize(
    "url",
    [
        f"{JOBS}{MISSING}/",
        f"{JOBS}{MISSING}/events/",
        f"{JOBS}not-a-uuid/",
        "/api/v1/webhooks/12345/",
        "/api/v1/webhooks/not-a-number/",
        "/api/v1/nowhere/",
        "/api/v2/",
    ],
)
def test_every_consumer_404_has_a_code(client, url):
    assert_error(client.get(url), 404, "not_found")


def test_every_coordinator_404_has_a_code(workspace):
    coordinator = key_client(make_key())
    assert_error(coordinator.get(f"{BASE}/jobs/{MISSING}/"), 404, "not_found")
    job = job_in_state("running", type="agent-task", workspace=workspace)
    response = coordinator.patch(
        f"{BASE}/jobs/{job.pk}/steps/999/", {"status": "completed"}, format="json"
    )
    assert_error(response, 404, "not_found")
    assert_error(coordinator.get(f"{BASE}/nowhere/"), 404, "not_found")


def test_refusals_of_drf_itself_have_a_code(client, workspace):
    job = job_in_state("queued", workspace=workspace)
    assert_error(client.put(f"{JOBS}{job.pk}/", {}, format="json"), 405, "method_not_allowed")
    assert_error(client.get(JOBS, HTTP_ACCEPT="text/csv"), 406, "not_acceptable")
    response = client.post(JOBS, "workspace=acme", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    assert_error(client.post(JOBS, "{", content_type="application/json"), 400, "parse_error")
    assert_error(APIClient().get(JOBS), 401, "not_authenticated")


def test_a_session_write_without_its_csrf_token_is_403_with_a_code(member, user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(JOBS, {"workspace": "acme", "type": "echo"}, format="json")
    assert_error(response, 403, "permission_denied")


def test_a_request_django_refuses_is_a_json_400(client):
    assert_error(client.get(JOBS, HTTP_HOST="evil.example"), 400, "bad_request")


def test_an_unexpected_fault_is_a_json_500_without_details(client, workspace, monkeypatch):
    job = job_in_state("queued", workspace=workspace)

    def broken(**kwargs):
        raise RuntimeError(f"secret detail of {settings.REDIS_URL}")

    monkeypatch.setattr(services, "job_cancel", broken)
    client.raise_request_exception = False
    response = client.post(f"{JOBS}{job.pk}/cancel/")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error.", "code": "server_error"}
    assert b"secret" not in response.content


def test_outside_the_api_django_keeps_its_pages(client):
    response = client.get("/nowhere/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_coordinator_401s_have_a_code():
    assert_error(APIClient().get(f"{BASE}/health/"), 401, "not_authenticated")
    # A consumer token is no credential here.
    response = token_client(UserFactory()).get(f"{BASE}/health/")
    assert_error(response, 401, "not_authenticated")


def test_a_debug_page_would_not_show_where_services_live():
    """Should DEBUG be on somewhere, its error page hides the broker and database settings."""
    request = RequestFactory().get("/api/v1/runner-jobs/")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        html = ExceptionReporter(request, *sys.exc_info()).get_traceback_html()
    assert settings.REDIS_URL not in html
    assert settings.CELERY_BROKER_URL not in html
    assert "DATABASES" in html
    assert repr(settings.DATABASES["default"]["NAME"]) not in html


def test_the_compose_stack_runs_without_debug_pages():
    compose = yaml.safe_load((Path(settings.BASE_DIR) / "docker-compose.yml").read_text())
    assert compose["x-django"]["environment"]["DEBUG"] == "false"


@override_settings(DEBUG=True)
def test_even_with_debug_on_the_api_answers_json_not_debug_pages(client, workspace, monkeypatch):
    """With DEBUG on Django answers an unmatched URL and a fault with its debug pages, never
    asking the error handlers: under /api/ those become the API's error body too."""
    assert_error(client.get("/api/v1/nowhere/"), 404, "not_found")
    job = job_in_state("queued", workspace=workspace)

    def broken(**kwargs):
        raise RuntimeError(f"secret detail of {settings.REDIS_URL}")

    monkeypatch.setattr(services, "job_cancel", broken)
    client.raise_request_exception = False
    response = client.post(f"{JOBS}{job.pk}/cancel/")
    assert response.json() == {"detail": "Internal server error.", "code": "server_error"}
    assert b"secret" not in response.content
    # Outside the API the debug page stays, for the developer who turned it on.
    assert client.get("/nowhere/")["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("handler", "status", "code"),
    [
        (lambda request: errors.bad_request(request, SuspiciousOperation()), 400, "bad_request"),
        (
            lambda request: errors.permission_denied(request, PermissionDenied()),
            403,
            "permission_denied",
        ),
        (lambda request: errors.not_found(request, Http404()), 404, "not_found"),
        (errors.server_error, 500, "server_error"),
    ],
)
def test_django_error_handlers_answer_json_under_the_api_and_pages_elsewhere(handler, status, code):
    api = handler(RequestFactory().get("/api/v1/anything/"))
    assert api.status_code == status
    assert json.loads(api.content) == {"detail": errors.STATUS_ERRORS[status][1], "code": code}
    page = handler(RequestFactory().get("/somewhere/"))
    assert page.status_code == status
    assert page["Content-Type"].startswith("text/html")
