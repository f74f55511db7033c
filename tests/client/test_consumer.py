"""The consumer client (``Client``, ``AsyncClient``) against the real service."""

import asyncio
import threading
import time

import pytest
from runner_jobs_client import (
    AsyncClient,
    Client,
    CoordinatorClient,
    Event,
    IdempotencyConflict,
    InvalidTransition,
    Job,
    NotFound,
    PreconditionFailed,
    ValidationError,
    WaitTimeout,
)

from runner_jobs.models import RunnerJob
from tests.client.conftest import QUICK_RETRIES

pytestmark = pytest.mark.django_db(transaction=True)


def api_events(client: Client, job: Job) -> list[Event]:
    """Every event of the job as the (paginated) events endpoint lists them."""
    return list(client.jobs.events(job.id))


def test_create_follow_and_wait_for_a_job_a_real_worker_runs(client, start_worker):
    start_worker(beat=False)
    job = client.jobs.create("acme", "sleep", {"seconds": 1, "steps": 2}, priority=7)
    assert (job.status, job.priority, job.workspace, job.created_by) in {
        ("pending", 7, "acme", "alice"),
        ("queued", 7, "acme", "alice"),
    }
    followed = list(client.jobs.follow(job.id, timeout=60))
    types = [event.type for event in followed]
    assert types[0] == "job.created"
    assert types[-1] == "job.completed"
    assert types.count("step.completed") == 2
    assert [e.payload["progress"] for e in followed if e.type == "job.progress"] == [50, 100]
    # Exactly the job's events, each once, in order.
    assert followed == api_events(client, job)
    done = client.jobs.wait(job.id, timeout=10)
    assert (done.status, done.progress, done.terminal) == ("completed", 100, True)
    assert done.version == len(followed)
    assert [step.status for step in done.steps] == ["completed", "completed"]
    # A job that has ended is waited for at once, and followed to its end again in full.
    assert client.jobs.wait(job.id, timeout=0.01) == done
    assert list(client.jobs.follow(job.id)) == followed


def complete_in_background(base_url: str, key: str, *, delay: float) -> threading.Thread:
    """A coordinator that claims the waiting agent-task after ``delay`` s and completes it."""

    def run() -> None:
        time.sleep(delay)
        with CoordinatorClient(base_url, key) as coordinator:
            (lease,) = coordinator.claim("agent-task")
            with lease:
                lease.progress(50, "halfway")
                lease.result = {"answer": 42}

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_async_client_creates_follows_and_waits(live_asgi, token, coordinator_key):
    async def scenario() -> tuple[Job, list[Event], Job, list[Event]]:
        async with AsyncClient(live_asgi, token, retry=QUICK_RETRIES) as client:
            job = await client.jobs.create("acme", "agent-task", {"prompt": "hi"})
            worker = complete_in_background(live_asgi, coordinator_key, delay=0.5)
            followed = [event async for event in client.jobs.follow(job.id, timeout=30)]
            done = await client.jobs.wait(job, timeout=5)
            listed = [event async for event in client.jobs.events(job.id)]
            worker.join()
            return job, followed, done, listed

    job, followed, done, listed = asyncio.run(scenario())
    assert job.status == "queued"
    assert [event.type for event in followed] == [
        "job.created",
        "job.queued",
        "job.started",
        "job.progress",
        "job.completed",
    ]
    assert followed == listed
    assert followed[3].payload == {"progress": 50, "message": "halfway"}
    assert (done.status, done.result) == ("completed", {"answer": 42})


def test_wait_gives_up_after_its_timeout_with_the_job_as_it_is(client):
    job = client.jobs.create("acme", "agent-task")
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as raised:
        client.jobs.wait(job.id, timeout=1)
    assert 1 <= time.monotonic() - started < 5
    assert raised.value.job is not None
    assert raised.value.job.status == "queued"


def test_list_iterates_every_page_with_filters(client):
    created = [
        client.jobs.create("acme", "agent-task", {"n": n}, agent_task_id=f"t-{n % 2}")
        for n in range(7)
    ]
    client.jobs.cancel(created[0].id)
    # Newest first, over four pages of two.
    listed = list(client.jobs.list(page_size=2, type="agent-task"))
    assert [job.id for job in listed] == [job.id for job in reversed(created)]
    queued = list(client.jobs.list(page_size=2, status=["queued", "running"], workspace="acme"))
    assert [job.payload["n"] for job in queued] == [6, 5, 4, 3, 2, 1]
    assert [job.payload["n"] for job in client.jobs.list(agent_task_id="t-0", status="queued")] == [
        6,
        4,
        2,
    ]
    assert [job.id for job in client.jobs.list(status="cancelled")] == [created[0].id]
    after = created[3].created_at
    assert len(list(client.jobs.list(created_after=after, page_size=1))) == 4  # inclusive
    assert list(client.jobs.list(type="echo")) == []


def test_every_refusal_is_its_typed_error_and_changes_nothing(client):
    job = client.jobs.create("acme", "agent-task")
    with pytest.raises(PreconditionFailed):
        client.jobs.cancel(job.id, if_match=1)
    cancelled = client.jobs.cancel(job.id, if_match=job)
    assert cancelled.status == "cancelled"
    with pytest.raises(InvalidTransition) as raised:
        client.jobs.cancel(job.id)
    assert (raised.value.status, raised.value.code) == (409, "invalid_transition")
    with pytest.raises(NotFound):
        client.jobs.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(ValidationError) as invalid:
        client.jobs.create("acme", "no-such-type")
    assert "type" in invalid.value.errors
    assert RunnerJob.objects.count() == 1


def test_retry_makes_a_new_job_only_while_the_version_matches(client):
    job = client.jobs.cancel(client.jobs.create("acme", "agent-task", {"a": 1}).id)
    with pytest.raises(PreconditionFailed):
        client.jobs.retry(job.id, if_match=job.version - 1)
    again = client.jobs.retry(job, if_match=job.etag)
    assert (again.retry_of, again.payload, again.status) == (job.id, {"a": 1}, "queued")
    assert [j.id for j in client.jobs.list(retry_of=job.id)] == [again.id]


def test_a_repeated_create_with_one_idempotency_key_is_one_job(client):
    first = client.jobs.create("acme", "agent-task", {"a": 1}, idempotency_key="order-7")
    again = client.jobs.create("acme", "agent-task", {"a": 1}, idempotency_key="order-7")
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict):
        client.jobs.create("acme", "agent-task", {"a": 2}, idempotency_key="order-7")
    assert RunnerJob.objects.count() == 1
