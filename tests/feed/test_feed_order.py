"""The feed's guarantee under concurrent writers: never skip, never repeat, resume exactly.

Transactions on different jobs commit out of id order; these tests make them do so on purpose
(each writer holds its transaction open a moment after its insert) and compare what a reader
of the SSE feed received with the table."""

import itertools
import random
import threading
import time
from functools import partial

import pytest
from django.db import connection, connections, transaction

from job_events.feed import FeedPosition, FeedQuery, workspace_events_after
from runner_jobs import services
from runner_jobs.errors import ConcurrentUpdateError
from runner_jobs.models import FEED_XID, JobEvent
from tests.execution.conftest import wait_for
from tests.factories import job_in_state
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 10
JOBS = 20
EVENTS_PER_WRITER = 25


@pytest.fixture(autouse=True)
def quick_keepalives(settings):
    settings.RUNNER_STREAM_KEEPALIVE_SECONDS = 1


def feed_url(base: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"workspace": "acme", **params}.items())
    return f"{base}/api/v1/events/stream/?{query}"


def table_order(workspace: Workspace) -> list[int]:
    return list(
        JobEvent.objects.filter(job__workspace=workspace)
        .order_by(FEED_XID, "id")
        .values_list("id", flat=True)
    )


def has_frames(reader, count: int) -> bool:
    return len(reader.frames) >= count


def received(reader) -> list[int]:
    return [frame.data["id"] for frame in reader.frames]


def assert_resumes_exactly(live_asgi, token, follow, frames, order) -> None:
    """Resuming from the middle (Last-Event-ID, ?after=<cursor>, ?after=<event id>) gives
    exactly the rest: nothing before, no repeat."""
    total = len(order)
    middle = frames[total // 2]
    resumed = follow(feed_url(live_asgi), token, **{"Last-Event-ID": middle.cursor})
    wait_for(lambda: len(resumed.frames) >= total - total // 2 - 1, timeout=30)
    time.sleep(0.5)
    assert received(resumed) == order[total // 2 + 1 :]
    assert [f.cursor for f in resumed.frames] == [f.cursor for f in frames[total // 2 + 1 :]]
    rest = total - total // 2 - 1
    for after in (middle.cursor, str(middle.data["id"])):
        again = follow(feed_url(live_asgi, after=after), token)
        wait_for(partial(has_frames, again, rest), timeout=30)
        assert received(again) == received(resumed)


def test_a_reader_following_ten_writers_on_twenty_jobs_gets_every_event_once_in_order(
    live_asgi, token, follow
):
    acme = Workspace.objects.get(slug="acme")
    jobs = [job_in_state("running", workspace=acme) for _ in range(JOBS)]
    reader = follow(feed_url(live_asgi), token)
    wait_for(lambda: len(reader.frames) == 3 * JOBS, timeout=30)
    commits: list[tuple[float, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)

    def write(n: int) -> None:
        rng = random.Random(n)
        start.wait()
        try:
            written = 0
            while written < EVENTS_PER_WRITER:
                job = rng.choice(jobs)
                try:
                    with transaction.atomic():
                        services.event_append(
                            job_id=job.pk, type="agent.tick", actor=f"w{n}", payload={"n": written}
                        )
                        event_id = JobEvent.objects.filter(job=job).latest("id").pk
                        # Hold the transaction open after the insert, so later ids commit first.
                        time.sleep(rng.uniform(0, 0.01))
                except ConcurrentUpdateError:
                    continue
                with lock:
                    commits.append((time.monotonic(), event_id))
                written += 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    total = 3 * JOBS + WRITERS * EVENTS_PER_WRITER
    assert JobEvent.objects.filter(job__workspace=acme).count() == total

    # The writers did commit out of id order: "id > last seen" would have skipped events.
    commit_order = [event_id for _, event_id in sorted(commits)]
    inversions = sum(later < earlier for earlier, later in itertools.pairwise(commit_order))
    assert inversions > 0

    writers_done = time.monotonic()
    wait_for(lambda: len(reader.frames) >= total, timeout=60)
    print(
        f"{total} events, {inversions} commits after a higher id, reader complete "
        f"{(time.monotonic() - writers_done) * 1000:.0f} ms after the last commit"
    )
    time.sleep(0.5)  # anything extra (a repeat) would arrive now
    assert reader.error is None and reader.status == 200
    assert received(reader) == table_order(acme)
    assert len(set(received(reader))) == total

    assert_resumes_exactly(live_asgi, token, follow, reader.frames, table_order(acme))


def hold_transaction(started: threading.Event, release: threading.Event, work) -> threading.Thread:
    def run() -> None:
        try:
            with transaction.atomic():
                work()
                started.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(10)
    return thread


def test_an_event_committed_after_a_higher_one_is_not_skipped(live_asgi, token, follow):
    acme = Workspace.objects.get(slug="acme")
    early, late = (job_in_state("running", workspace=acme) for _ in range(2))
    reader = follow(feed_url(live_asgi, type="agent.*"), token)
    started, release = threading.Event(), threading.Event()
    # The early event takes the lower id, then its transaction stays open...
    holder = hold_transaction(
        started,
        release,
        lambda: services.event_append(job_id=early.pk, type="agent.early", actor="a"),
    )
    # ... while the late one, a higher id, commits first.
    services.event_append(job_id=late.pk, type="agent.late", actor="b")
    early_id, late_id = (
        JobEvent.objects.get(type=t).pk if t == "agent.late" else None
        for t in ("agent.early", "agent.late")
    )
    assert early_id is None and late_id is not None  # the early one is not even visible yet
    time.sleep(1)
    assert reader.frames == []  # held back: an older transaction is still running
    batch = workspace_events_after(
        query=FeedQuery(acme.pk, ("agent.*",)), after=FeedPosition(0, 0), limit=10
    )
    assert batch.events == [] and batch.held_back
    release.set()
    holder.join(10)
    wait_for(lambda: len(reader.frames) == 2, timeout=30)
    assert [f.event for f in reader.frames] == ["agent.early", "agent.late"]
    assert reader.frames[0].data["id"] < reader.frames[1].data["id"]


def test_a_transaction_that_writes_no_event_delays_the_feed_but_does_not_stall_it(
    live_asgi, token, follow
):
    acme = Workspace.objects.get(slug="acme")
    job = job_in_state("running", workspace=acme)
    reader = follow(feed_url(live_asgi, type="agent.*"), token)
    started, release = threading.Event(), threading.Event()

    def take_a_transaction_id() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")

    holder = hold_transaction(started, release, take_a_transaction_id)
    services.event_append(job_id=job.pk, type="agent.note", actor="a")
    time.sleep(1)
    assert reader.frames == []
    release.set()
    holder.join(10)
    # No ring comes when the holder ends (it wrote no event): the held-back poll finds it.
    wait_for(lambda: len(reader.frames) == 1, timeout=10)
    assert reader.frames[0].event == "agent.note"


def test_the_stream_sends_keep_alives_and_refuses_bad_requests(live_asgi, token, follow):
    import httpx

    reader = follow(feed_url(live_asgi), token)
    wait_for(lambda: reader.comments, timeout=10)
    assert reader.comments[0] == "keep-alive"
    assert reader.retry == "3000"
    auth = {"Authorization": f"Token {token}"}
    cases = [
        (feed_url(live_asgi, type="BAD"), auth, 400, "type"),
        (feed_url(live_asgi, after="x"), auth, 400, "after"),
        (f"{live_asgi}/api/v1/events/stream/", auth, 400, "workspace"),
        (feed_url(live_asgi, workspace="other"), auth, 404, "code"),
        (feed_url(live_asgi), {}, 401, "code"),
        (feed_url(live_asgi), {"Authorization": "Token nope"}, 401, "code"),
    ]
    for url, headers, status, key in cases:
        response = httpx.get(url, headers=headers, timeout=10)
        assert response.status_code == status, url
        assert key in response.json()
    refused = httpx.post(feed_url(live_asgi), headers=auth, timeout=10)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    with_body = httpx.request("GET", feed_url(live_asgi), headers=auth, content=b"x", timeout=10)
    assert with_body.status_code == 413


def test_the_feed_counts_against_the_credentials_stream_cap(live_asgi, token, follow, settings):
    import httpx

    settings.RUNNER_STREAM_MAX_PER_TOKEN = 1
    reader = follow(feed_url(live_asgi), token)
    wait_for(lambda: reader.status == 200, timeout=10)
    second = httpx.get(feed_url(live_asgi), headers={"Authorization": f"Token {token}"}, timeout=10)
    assert second.status_code == 429
    assert second.json()["code"] == "too_many_streams"
