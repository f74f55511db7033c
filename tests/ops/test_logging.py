"""JSON log lines carry the request id and, for job writes, the job's context."""

import io
import json
import logging
import logging.config

import pytest
import structlog
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from config.logging import logging_config
from runner_jobs import services
from tests.factories import WorkspaceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_logs():
    """Production's JSON formatter on the root logger for one test; yields a reader of lines."""
    config = logging_config(json=True, level="DEBUG")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.config.DictConfigurator(config).configure_formatter(
            config["formatters"]["structlog"]
        )
    )
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


def test_request_id_is_kept_when_sane_and_echoed(client, json_logs):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="lb-0123456789")
    assert response["X-Request-ID"] == "lb-0123456789"
    [line] = [entry for entry in json_logs() if entry["event"] == "request_finished"]
    assert line == {
        "event": "request_finished",
        "request_id": "lb-0123456789",
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "duration_ms": line["duration_ms"],
        "level": "info",
        "logger": "runner_jobs.access",
        "timestamp": line["timestamp"],
    }


def test_an_unusable_request_id_is_replaced(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="no spaces; or quotes'")
    assert len(response["X-Request-ID"]) == 32
    assert response["X-Request-ID"] != client.get("/healthz")["X-Request-ID"]


def test_job_writes_log_job_workspace_and_actor(json_logs, django_capture_on_commit_callbacks):
    ws = WorkspaceFactory()
    with (
        structlog.contextvars.bound_contextvars(request_id="req-abcdefgh"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job = services.job_create(
            workspace=ws, spec=services.JobSpec(type="agent-task", payload={}), actor="user:alice"
        )
    lines = [entry for entry in json_logs() if entry["logger"] == "runner_jobs.jobs"]
    # One line for the one write that made the job and queued it.
    assert [(entry["event"], entry["event_type"], entry["event_types"]) for entry in lines] == [
        ("job_transition", "job.queued", ["job.created", "job.queued"]),
    ]
    for entry in lines:
        assert entry["request_id"] == "req-abcdefgh"
        assert entry["job_id"] == str(job.job.pk)
        assert entry["workspace_id"] == ws.pk
        assert entry["actor"] == "user:alice"
        assert entry["level"] == "info"


def test_console_format_in_development():
    config = logging_config(json=False, level="INFO")
    renderer = config["formatters"]["structlog"]["processors"][-1]
    assert isinstance(renderer, structlog.dev.ConsoleRenderer)


def test_reports_are_logged_at_debug(json_logs, django_capture_on_commit_callbacks):
    job = services.job_create(
        workspace=WorkspaceFactory(),
        spec=services.JobSpec(type="agent-task", payload={}),
        actor="t",
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.event_append(job_id=job.job.pk, type="agent.note", actor="coordinator:k")
    [line] = [entry for entry in json_logs() if entry["logger"] == "runner_jobs.jobs"]
    assert (line["event"], line["event_type"], line["level"]) == (
        "job_report",
        "agent.note",
        "debug",
    )
    assert line["actor"] == "coordinator:k"


def test_request_id_under_asgi():
    """Through Django's ASGI handler, as the event streams are served."""
    get = async_to_sync(AsyncClient().get)
    response = get("/healthz", headers={"X-Request-ID": "asgi-12345678"})
    assert response.status_code == 200
    assert response["X-Request-ID"] == "asgi-12345678"
    assert get("/api/v1/runner-jobs/").status_code == 401
