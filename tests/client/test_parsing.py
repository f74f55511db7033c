"""The client's pure parts: answers the live service cannot give yet (``duplicate_job`` comes
with flow control) or that are awkward to provoke (an HTTP-date ``Retry-After``), the SSE
decoder and the query string."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from runner_jobs_client import DuplicateJob, Job, RateLimited, ServiceUnavailable, ValidationError
from runner_jobs_client._core import SSEDecoder, create_body, query_params
from runner_jobs_client.errors import error_from_response


def test_duplicate_job_carries_the_live_job():
    body = {"detail": "A live job has this key.", "code": "duplicate_job", "job": {"id": "j1"}}
    error = error_from_response(httpx.Response(409, json=body))
    assert isinstance(error, DuplicateJob)
    assert error.job == Job({"id": "j1"})


def test_retry_after_as_an_http_date():
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    error = error_from_response(httpx.Response(503, headers={"Retry-After": later}, json={}))
    assert isinstance(error, ServiceUnavailable)
    assert 85 < error.retry_after <= 90
    error = error_from_response(httpx.Response(429, headers={"Retry-After": "soon"}, json={}))
    assert isinstance(error, RateLimited)
    assert error.retry_after is None


def test_field_errors_and_pages_that_are_not_json():
    error = error_from_response(httpx.Response(400, json={"type": ["Unknown job type."]}))
    assert isinstance(error, ValidationError)
    assert error.errors == {"type": ["Unknown job type."]}
    assert "Unknown job type." in error.detail
    page = error_from_response(httpx.Response(502, text="<html>Bad gateway</html>"))
    assert (page.status, page.code, page.detail) == (502, "error", "Bad Gateway")


def test_sse_decoder_reads_messages_only_when_they_are_whole():
    decoder = SSEDecoder()
    lines = [": keep-alive", "", "id: 7", "event: job.progress", "data: {", "data: }", ""]
    assert [decoder.feed(line) for line in lines] == [None] * 6 + [("7", "job.progress", "{\n}")]
    # A message cut off before its blank line is dropped when the connection is new.
    decoder.feed("id: 8")
    decoder.feed("data: {")
    decoder.reset()
    assert decoder.feed("") is None


@pytest.mark.parametrize(
    ("filters", "query"),
    [
        ({"status": ["queued", "running"]}, [("status", "queued,running")]),
        ({"tag": ["a", "b"]}, [("tag", "a"), ("tag", "b")]),
        (
            {"metadata": {"team": "x", "env": "prod"}},
            [("metadata.team", "x"), ("metadata.env", "prod")],
        ),
        (
            {"created_after": datetime(2026, 1, 2, tzinfo=UTC), "type": None},
            [("created_after", "2026-01-02T00:00:00+00:00")],
        ),
        ({"flag": True, "page_size": 5}, [("flag", "true"), ("page_size", "5")]),
    ],
)
def test_query_params(filters, query):
    assert list(query_params(filters)) == query


def test_create_body_sends_only_what_is_set():
    run_at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    body = create_body("acme", "echo", None, {"priority": None, "run_at": run_at, "tags": ["x"]})
    assert body == {
        "workspace": "acme",
        "type": "echo",
        "payload": {},
        "run_at": "2026-12-01T09:00:00+00:00",
        "tags": ["x"],
    }
