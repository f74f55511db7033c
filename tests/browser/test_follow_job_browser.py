"""Browser clients (SPEC §11) in Chromium: the example page, served from another origin, follows a
job with nothing but a read token (a fresh context, no cookies) and stops for good at the end;
a plain ``EventSource`` that never closes itself stops after one 204; CORS lets a listed origin
in and gives another nothing. The service is the project's ASGI application under uvicorn
(``live_asgi``), so the stream really streams."""

import functools
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from rest_framework.test import APIClient

from runner_jobs import services
from runner_jobs.models import RunnerJob
from tests.events.test_stream import acme, stored_events
from tests.factories import job_in_state

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def static_origin() -> Iterator[str]:
    """docs/examples/ served by a plain static server on a port of its own: another origin."""
    handler = functools.partial(QuietHandler, directory=str(EXAMPLES))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def page_origin(settings) -> Iterator[str]:
    """The origin the example page is served from, listed in RUNNER_CORS_ALLOWED_ORIGINS."""
    for origin in static_origin():
        settings.CORS_ALLOWED_ORIGINS = [origin]
        yield origin


@pytest.fixture
def refused_origin() -> Iterator[str]:
    yield from static_origin()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser context: no cookies, no storage, nobody logged in."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    assert context.cookies() == []
    yield context
    context.close()


def read_token_for(token: str, job: RunnerJob) -> str:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post(f"/api/v1/runner-jobs/{job.pk}/read-token/")
    assert response.status_code == 201
    return str(response.json()["token"])


class Requests:
    """Every request and response a page makes, with when it happened."""

    def __init__(self, page: Page) -> None:
        self.sent: list[tuple[float, str, str]] = []
        self.answered: list[tuple[float, str, int]] = []
        page.on("request", lambda r: self.sent.append((time.monotonic(), r.method, r.url)))
        page.on("response", lambda r: self.answered.append((time.monotonic(), r.url, r.status)))

    def to_stream(self) -> list[tuple[float, str, str]]:
        return [r for r in self.sent if "/events/stream/" in r[2]]

    def stream_statuses(self) -> list[int]:
        return [status for _, url, status in self.answered if "/events/stream/" in url]


def test_the_example_page_follows_a_job_with_a_read_token_and_stops_at_the_end(
    context, live_asgi, token, page_origin
):
    job = job_in_state("running", workspace=acme())
    read_token = read_token_for(token, job)
    page = context.new_page()
    requests = Requests(page)
    query = urlencode({"api": live_asgi, "job": str(job.pk), "token": read_token})
    page.goto(f"{page_origin}/follow-job.html?{query}")

    expect(page.locator("#state")).to_have_text("Live.")
    expect(page.locator("#status")).to_have_text("running")
    expect(page.locator("#events li .type")).to_have_text(
        ["job.created", "job.queued", "job.started"]
    )
    assert "token=" not in page.url  # out of the address bar (and the history)

    step = services.step_start(job_id=job.pk, name="fetch", phase="execution", actor="worker")
    expect(page.locator("#steps li")).to_have_text(["fetch (execution, running)"])
    services.job_progress_update(job_id=job.pk, progress=40, message="halfway", actor="worker")
    expect(page.locator("#progress-text")).to_have_text("40 %")
    expect(page.locator("#progress")).to_have_js_property("value", 40)
    expect(page.locator("#message")).to_have_text("halfway")
    services.step_finish(job_id=job.pk, step_id=step.pk, status="completed", actor="worker")
    expect(page.locator("#steps li")).to_have_text(["fetch (execution, completed)"])
    services.job_complete(job_id=job.pk, result={"ok": True}, actor="worker")

    expect(page.locator("#state")).to_have_text("Finished: completed.")
    expect(page.locator("#status")).to_have_text("completed")
    expect(page.locator("#progress-text")).to_have_text("100 %")
    ended_at = time.monotonic()
    expected = [event_type for _, event_type in stored_events(job)]
    expect(page.locator("#events li .type")).to_have_text(expected)
    assert expected[-1] == "job.completed"

    # Several seconds (more than the stream's retry delay) with the page still open: the
    # stream was opened once, and nothing at all was asked for after the end.
    page.wait_for_timeout(5_000)
    assert len(requests.to_stream()) == 1
    assert requests.stream_statuses() == [200]
    assert [r for r in requests.sent if r[0] > ended_at + 1] == []
    assert context.cookies() == []


def test_a_plain_event_source_stops_after_one_204(context, live_asgi, token, page_origin, settings):
    """A page that never closes its EventSource: after the terminal event the browser
    reconnects once, with Last-Event-ID, gets a 204, and stops for good."""
    settings.RUNNER_STREAM_RETRY_MS = 300
    job = job_in_state("running", workspace=acme())
    url = f"{live_asgi}/api/v1/runner-jobs/{job.pk}/events/stream/?access_token="
    url += read_token_for(token, job)
    page = context.new_page()
    requests = Requests(page)
    page.goto(f"{page_origin}/follow-job.html")
    page.evaluate(
        """(url) => {
            window.seen = [];
            window.plain = new EventSource(url);
            for (const type of ["job.created", "job.queued", "job.started", "job.completed"]) {
                plain.addEventListener(type, (e) => seen.push([type, e.lastEventId]));
            }
        }""",
        url,
    )
    page.wait_for_function("window.seen.length === 3")
    services.job_complete(job_id=job.pk, result=None, actor="worker")
    page.wait_for_function("window.plain.readyState === EventSource.CLOSED")
    seen = page.evaluate("window.seen")
    assert seen == [[t, str(i)] for i, t in stored_events(job)]

    page.wait_for_timeout(3_000)  # ten retry delays
    assert requests.stream_statuses() == [200, 204]
    assert len(requests.to_stream()) == 2
    assert page.evaluate("window.plain.readyState") == 2


FETCH_DETAIL = """async ([url, readToken]) => {
    try {
        const response = await fetch(url, {
            headers: {Authorization: `Bearer ${readToken}`, "Last-Event-ID": "0"},
        });
        return {status: response.status, etag: response.headers.get("ETag")};
    } catch (error) {
        return {error: String(error)};
    }
}"""

CREATE_JOB = """async ([api, token]) => {
    const response = await fetch(`${api}/api/v1/runner-jobs/`, {
        method: "POST",
        headers: {
            Authorization: `Token ${token}`,
            "Content-Type": "application/json",
            "Idempotency-Key": "browser-1",
        },
        body: JSON.stringify({workspace: "acme", type: "echo", payload: {from: "a page"}}),
    });
    return {status: response.status, location: response.headers.get("Location")};
}"""


def test_cors_lets_the_listed_origin_in_and_no_other(
    context, live_asgi, token, page_origin, refused_origin
):
    job = job_in_state("completed", workspace=acme())
    read_token = read_token_for(token, job)
    detail = f"{live_asgi}/api/v1/runner-jobs/{job.pk}/"

    allowed = context.new_page()
    allowed.goto(f"{page_origin}/follow-job.html")
    # Custom headers: the browser sends a preflight first, then the request.
    answer = allowed.evaluate(FETCH_DETAIL, [detail, read_token])
    assert answer == {"status": 200, "etag": f'"{job.version}"'}  # ETag is exposed
    created = allowed.evaluate(CREATE_JOB, [live_asgi, token])
    assert created["status"] == 201
    assert created["location"].endswith("/")  # Location is exposed
    assert RunnerJob.objects.filter(payload={"from": "a page"}).count() == 1

    refused = context.new_page()
    refused.goto(f"{refused_origin}/follow-job.html")
    answer = refused.evaluate(FETCH_DETAIL, [detail, read_token])
    assert "error" in answer  # the browser refused to hand over the answer


PREFLIGHT_HEADERS = "authorization, content-type, idempotency-key, if-match, last-event-id"


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": PREFLIGHT_HEADERS,
        },
    )


def test_preflight_answers_name_exactly_what_spec_allows(live_asgi, page_origin, refused_origin):
    url = f"{live_asgi}/api/v1/runner-jobs/"
    allowed = preflight(url, page_origin)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == page_origin
    assert set(allowed.headers["access-control-allow-headers"].split(", ")) == set(
        PREFLIGHT_HEADERS.split(", ")
    )
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers

    # The stream's URL too (served by the ASGI side of the web tier).
    stream = preflight(f"{live_asgi}/api/v1/runner-jobs/x/events/stream/", page_origin)
    assert stream.headers["access-control-allow-origin"] == page_origin

    refused = preflight(url, refused_origin)
    assert not [h for h in refused.headers if h.startswith("access-control-")]
    plain = httpx.get(url, headers={"Origin": refused_origin})
    assert plain.status_code == 401
    assert not [h for h in plain.headers if h.startswith("access-control-")]

    answered = httpx.get(url, headers={"Origin": page_origin})
    assert answered.headers["access-control-allow-origin"] == page_origin
    assert set(answered.headers["access-control-expose-headers"].split(", ")) == {
        "ETag",
        "Location",
    }
