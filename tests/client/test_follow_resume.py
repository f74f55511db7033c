"""``follow()`` over a connection that keeps dropping: it resumes with ``Last-Event-ID`` and
delivers every event of the job exactly once, in order, while the events are being written."""

import threading

import pytest
from runner_jobs_client import Client, CoordinatorClient

pytestmark = pytest.mark.django_db(transaction=True)

REPORTS = 40


def report_steadily(
    coordinator: CoordinatorClient, received: threading.Semaphore
) -> threading.Thread:
    """A coordinator that runs the job with many small reports while the follower reads, never
    more than a few events ahead of it (so every connection has frames left to be cut in)."""

    def run() -> None:
        (lease,) = coordinator.claim("agent-task")
        with lease:
            for n in range(REPORTS):
                assert received.acquire(timeout=20), "the follower stopped reading"
                if n % 2:
                    lease.progress(n * 100 // REPORTS)
                else:
                    lease.event("agent.note", {"n": n})
            lease.result = "done"

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_dropped_stream_is_resumed_without_skipping_or_repeating(
    client, coordinator, proxy, token
):
    proxy.cut_streams, proxy.frames_per_stream = 4, 3
    job = client.jobs.create("acme", "agent-task")
    received = threading.Semaphore(0)
    writer = report_steadily(coordinator, received)
    followed = []
    with Client(proxy.url, token) as through_proxy:
        for event in through_proxy.jobs.follow(job.id, timeout=60):
            followed.append(event)
            received.release()
    writer.join()

    every = list(client.jobs.events(job.id))
    assert len(every) == 2 + 1 + REPORTS + 1  # created, queued, started, reports, completed
    assert [event.id for event in followed] == [event.id for event in every]
    assert followed == every
    assert followed[-1].type == "job.completed"
    # Four connections were cut in the middle of a frame; each reconnection asked to resume
    # after the last event that had arrived whole.
    assert proxy.cuts == 4
    resumes = proxy.stream_resumes()
    assert len(resumes) == 5
    assert resumes[0] == 0
    ids = [event.id for event in followed]
    assert all(resume in ids for resume in resumes[1:])
    assert resumes == sorted(resumes)
    assert len(set(resumes)) == 5


def test_a_stream_that_starts_after_an_event_id_delivers_only_later_ones(client, coordinator):
    job = client.jobs.create("acme", "agent-task")
    (lease,) = coordinator.claim("agent-task")
    with lease:
        lease.progress(10)
    every = list(client.jobs.events(job.id))
    assert [event.type for event in client.jobs.follow(job.id, after=every[1].id)] == [
        "job.started",
        "job.progress",
        "job.completed",
    ]
