"""The SSE stream of a job, over real HTTP (uvicorn) against the real PostgreSQL and Redis."""

import threading
import time

import pytest
from django.test import Client

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from tests.events.conftest import SSE, StreamThread, sse_read
from tests.factories import UserFactory, WorkspaceFactory, job_in_state
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db(transaction=True)

EVENT_FIELDS = {"id", "job", "step", "type", "timestamp", "actor", "payload"}


def stream_url(base: str, job: RunnerJob) -> str:
    return f"{base}/api/v1/runner-jobs/{job.pk}/events/stream/"


def acme() -> Workspace:
    return Workspace.objects.get(slug="acme")


def stored_events(job: RunnerJob) -> list[tuple[int, str]]:
    return list(JobEvent.objects.filter(job=job).order_by("id").values_list("id", "type"))


def received(events: list[SSE]) -> list[tuple[int, str]]:
    return [(e.id, e.event) for e in events]


@pytest.mark.worker
@pytest.mark.parametrize(
    ("job_type", "payload", "middle"),
    [
        ("echo", {"hello": "world"}, []),
        (
            "sleep",
            {"seconds": 1.5, "steps": 3},
            ["step.started", "step.completed", "job.progress"] * 3,
        ),
    ],
)
def test_stream_follows_a_job_run_by_a_real_worker_from_start_to_end(
    live_asgi, token, start_worker, job_type, payload, middle
):
    start_worker(beat=False)
    job = services.job_create(
        workspace=acme(), spec=services.JobSpec(type=job_type, payload=payload), actor="user:alice"
    ).job
    result = sse_read(stream_url(live_asgi, job), token, timeout=60)

    assert result.status == 200
    assert result.headers["content-type"].startswith("text/event-stream")
    assert result.headers["cache-control"] == "no-cache"
    assert received(result.events) == stored_events(job)
    assert [e.event for e in result.events] == [
        "job.created",
        "job.queued",
        "job.started",
        *middle,
        "job.completed",
    ]
    assert result.closed_by_server
    first = result.events[0]
    assert set(first.data) == EVENT_FIELDS
    assert first.data["id"] == first.id and first.data["job"] == str(job.pk)
    assert first.data["type"] == "job.created"


def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(live_asgi, token):
    job = job_in_state("running", workspace=acme())
    url = stream_url(live_asgi, job)
    first = sse_read(url, token, stop_after=2)
    assert [e.event for e in first.events] == ["job.created", "job.queued"]
    assert not first.closed_by_server
    for n in range(5):
        services.event_append(job_id=job.pk, type="test.tick", payload={"n": n}, actor="w")
    services.job_complete(job_id=job.pk, result=None, actor="worker")

    resumed = sse_read(url, token, headers={"Last-Event-ID": str(first.events[-1].id)})
    by_query = sse_read(f"{url}?after={first.events[-1].id}", token)

    assert received(first.events + resumed.events) == stored_events(job)
    assert received(by_query.events) == received(resumed.events)
    assert [e.event for e in resumed.events] == [
        "job.started",
        *["test.tick"] * 5,
        "job.completed",
    ]
    assert resumed.closed_by_server


def test_resuming_at_or_past_the_terminal_event_is_a_204(live_asgi, token):
    """What a browser's EventSource does after the stream closed: reconnect with the last id.
    204 tells it to stop for good."""
    job = job_in_state("completed", workspace=acme())
    last = stored_events(job)[-1][0]
    for cursor in (last, last + 1000):
        for headers, query in (({"Last-Event-ID": str(cursor)}, ""), ({}, f"?after={cursor}")):
            result = sse_read(stream_url(live_asgi, job) + query, token, headers=headers)
            assert result.status == 204, (cursor, headers, query)
            assert result.body == b""


def test_a_finished_job_is_streamed_once_then_204(live_asgi, token):
    job = job_in_state("failed", workspace=acme())
    url = stream_url(live_asgi, job)
    first = sse_read(url, token)
    assert first.status == 200 and first.closed_by_server
    assert received(first.events) == stored_events(job)
    assert first.retry == 3000
    again = sse_read(url, token, headers={"Last-Event-ID": str(first.events[-1].id)})
    assert again.status == 204


def test_the_retry_field_comes_first_and_follows_the_setting(live_asgi, token, settings):
    settings.RUNNER_STREAM_RETRY_MS = 1234
    job = job_in_state("completed", workspace=acme())
    import httpx

    with httpx.stream(
        "GET", stream_url(live_asgi, job), headers={"Authorization": f"Token {token}"}
    ) as response:
        assert next(response.iter_lines()) == "retry: 1234"


def test_five_writers_thousand_events_each_once_in_id_order(live_asgi, token):
    """5 threads add 200 events each while a stream reads: all 1000 exactly once, in id order."""
    job = job_in_state("running", workspace=acme())
    reader = StreamThread(stream_url(live_asgi, job), token, timeout=60)
    reader.start()
    time.sleep(0.3)
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        from django.db import connection

        try:
            for n in range(200):
                while True:
                    try:
                        services.event_append(
                            job_id=job.pk, type="test.write", payload={"w": w, "n": n}, actor="w"
                        )
                        break
                    except services.ConcurrentUpdateError:
                        continue
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(5)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert failures == []
    services.job_complete(job_id=job.pk, result=None, actor="worker")
    result = reader.outcome(timeout=60)

    writes = [e for e in result.events if e.event == "test.write"]
    assert len(writes) == 1000
    assert {(e.data["payload"]["w"], e.data["payload"]["n"]) for e in writes} == {
        (w, n) for w in range(5) for n in range(200)
    }
    ids = [e.id for e in result.events]
    assert ids == sorted(set(ids))
    assert received(result.events) == stored_events(job)
    # Each writer's own events arrive in the order it wrote them.
    for w in range(5):
        ns = [e.data["payload"]["n"] for e in writes if e.data["payload"]["w"] == w]
        assert ns == list(range(200))


def test_a_writer_holding_the_row_lock_keeps_later_events_invisible(live_asgi, token):
    """The gap this design closes: writer A has drawn an event id but not committed; writer B
    wants to add one. B must wait for A's row lock, so B's id is larger and becomes visible
    after A's. Were B let through (an event insert without the job's lock), B would commit a
    larger id first, the stream would move past it and A's event would never be sent: this
    test would then see B before A, or miss A."""
    from django.db import connection, transaction

    job = job_in_state("running", workspace=acme())
    reader = StreamThread(stream_url(live_asgi, job), token)
    reader.start()
    time.sleep(0.3)
    a_inserted, a_release, b_done = threading.Event(), threading.Event(), threading.Event()

    def writer_a() -> None:
        try:
            with transaction.atomic():
                services.event_append(job_id=job.pk, type="test.a", actor="a")
                a_inserted.set()
                a_release.wait(10)
        finally:
            connection.close()

    def writer_b() -> None:
        try:
            a_inserted.wait(10)
            services.event_append(job_id=job.pk, type="test.b", actor="b")
            b_done.set()
        finally:
            connection.close()

    threads = [threading.Thread(target=writer_a), threading.Thread(target=writer_b)]
    for t in threads:
        t.start()
    assert a_inserted.wait(10)
    assert not b_done.wait(1.0), "B wrote its event while A held the job's row lock"
    a_release.set()
    for t in threads:
        t.join(10)
    assert b_done.is_set()
    services.job_complete(job_id=job.pk, result=None, actor="worker")
    result = reader.outcome()

    types = [e.event for e in result.events]
    assert types[-3:] == ["test.a", "test.b", "job.completed"]
    assert received(result.events) == stored_events(job)


def test_a_new_event_reaches_the_stream_by_wakeup_not_by_poll(live_asgi, token, settings):
    settings.RUNNER_STREAM_POLL_SECONDS = 60
    job = job_in_state("running", workspace=acme())
    reader = StreamThread(stream_url(live_asgi, job), token)
    reader.start()
    time.sleep(1.5)
    started = time.monotonic()
    services.job_complete(job_id=job.pk, result=None, actor="worker")
    result = reader.outcome(timeout=10)
    assert time.monotonic() - started < 2
    assert result.events[-1].event == "job.completed"


def test_without_redis_the_slow_poll_still_delivers_every_event(live_asgi, token, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.RUNNER_STREAM_POLL_SECONDS = 0.3
    job = job_in_state("running", workspace=acme())
    reader = StreamThread(stream_url(live_asgi, job), token)
    reader.start()
    time.sleep(0.5)
    services.event_append(job_id=job.pk, type="test.tick", actor="w")
    services.job_complete(job_id=job.pk, result=None, actor="worker")
    result = reader.outcome(timeout=10)
    assert received(result.events) == stored_events(job)


def test_keepalive_comment_while_nothing_happens(live_asgi, token, settings):
    settings.RUNNER_STREAM_KEEPALIVE_SECONDS = 0.2
    job = job_in_state("running", workspace=acme())
    reader = StreamThread(stream_url(live_asgi, job), token)
    reader.start()
    time.sleep(1.5)
    services.job_cancel(job_id=job.pk, actor="user:alice")
    result = reader.outcome(timeout=10)
    assert result.comments.count("keep-alive") >= 2
    assert result.events[-1].event == "job.cancelled"


def test_session_authentication_is_accepted(live_asgi, token):
    job = job_in_state("completed", workspace=acme())
    client = Client()
    client.force_login(UserFactory(username="alice"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    result = sse_read(stream_url(live_asgi, job), None, headers={"Cookie": cookie})
    assert result.status == 200
    assert received(result.events) == stored_events(job)


@pytest.mark.parametrize(
    ("auth", "status", "code"),
    [
        (None, 401, "not_authenticated"),
        ("Token nope", 401, "authentication_failed"),
    ],
)
def test_refused_without_valid_credentials(live_asgi, token, auth, status, code):
    job = job_in_state("running", workspace=acme())
    headers = {"Authorization": auth} if auth else {}
    result = sse_read(stream_url(live_asgi, job), None, headers=headers)
    assert result.status == status
    assert result.headers["content-type"] == "application/json"
    assert result.headers["www-authenticate"] == "Token"
    import json

    assert json.loads(result.body)["code"] == code


def test_another_workspaces_job_is_not_found(live_asgi, token):
    job = job_in_state("running", workspace=WorkspaceFactory(slug="globex"))
    result = sse_read(stream_url(live_asgi, job), token)
    assert result.status == 404
    assert result.body == b'{"detail": "No such job.", "code": "not_found"}'


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "9" * 20])
def test_a_bad_resume_id_is_a_400(live_asgi, token, bad):
    job = job_in_state("running", workspace=acme())
    result = sse_read(stream_url(live_asgi, job), token, headers={"Last-Event-ID": bad})
    assert result.status == 400
    assert b'"code": "invalid"' in result.body


def test_only_get_is_allowed(live_asgi, token):
    import httpx

    job = job_in_state("running", workspace=acme())
    response = httpx.post(stream_url(live_asgi, job), headers={"Authorization": f"Token {token}"})
    assert response.status_code == 405


def test_a_stream_far_behind_catches_up_in_batches(live_asgi, token, monkeypatch):
    from job_events import views

    monkeypatch.setattr(views, "STREAM_BATCH_SIZE", 2)
    job = job_in_state("running", workspace=acme())
    for n in range(4):
        services.event_append(job_id=job.pk, type="test.tick", payload={"n": n}, actor="w")
    services.job_complete(job_id=job.pk, result=None, actor="worker")
    result = sse_read(stream_url(live_asgi, job), token)
    assert received(result.events) == stored_events(job) and len(result.events) == 8
    assert result.closed_by_server


def test_two_streams_of_one_job_are_both_woken(live_asgi, token):
    job = job_in_state("running", workspace=acme())
    readers = [StreamThread(stream_url(live_asgi, job), token) for _ in range(2)]
    for reader in readers:
        reader.start()
    time.sleep(0.5)
    services.job_complete(job_id=job.pk, result=None, actor="worker")
    for reader in readers:
        assert received(reader.outcome(timeout=10).events) == stored_events(job)
