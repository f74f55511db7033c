"""``CoordinatorClient`` and its leases against the real service."""

import time

import pytest
from django.utils import timezone
from runner_jobs_client import CoordinatorClient, StaleLease

from runner_jobs import services
from runner_jobs.models import JobEvent, JobStep, RunnerJob
from tests.client.conftest import QUICK_RETRIES

pytestmark = pytest.mark.django_db(transaction=True)


def summarise(prompt: str) -> dict[str, str]:
    if not prompt:
        raise ValueError("nothing to summarise")
    return {"summary": prompt.upper()}


def test_a_coordinator_loop_claims_reports_and_completes(client, coordinator):
    prompts = ["alpha", "", "gamma", "delta", "epsilon"]
    jobs = [client.jobs.create("acme", "agent-task", {"prompt": p}) for p in prompts]
    handled = []
    while leases := coordinator.claim(["agent-task"], limit=2, worker="agent-1"):
        for lease in leases:
            handled.append(lease.id)
            try:
                with lease:
                    with lease.step("research") as step:
                        step.output("3 sources")
                    lease.progress(50, "halfway")
                    lease.event("agent.tool_call", {"tool": "search"}, step=step.id)
                    lease.result = summarise(lease.payload["prompt"])
            except ValueError:
                pass
    # Oldest first (equal priority), each once.
    assert handled == [job.id for job in jobs]

    done = {job.id: client.jobs.get(job.id) for job in jobs}
    assert [done[job.id].status for job in jobs] == [
        "completed",
        "failed",
        "completed",
        "completed",
        "completed",
    ]
    assert done[jobs[0].id].result == {"summary": "ALPHA"}
    assert done[jobs[1].id].error == "ValueError: nothing to summarise"
    first = done[jobs[0].id]
    assert [(e.type, e.actor) for e in first.events] == [
        ("job.created", "user:alice"),
        ("job.queued", "user:alice"),
        ("job.started", "coordinator:agents"),
        ("step.started", "coordinator:agents"),
        ("step.output", "coordinator:agents"),
        ("step.completed", "coordinator:agents"),
        ("job.progress", "coordinator:agents"),
        ("agent.tool_call", "coordinator:agents"),
        ("job.completed", "coordinator:agents"),
    ]
    assert first.events[7].step == first.steps[0].id
    assert [(s.name, s.status, s.output) for s in first.steps] == [
        ("research", "completed", "3 sources")
    ]
    assert RunnerJob.objects.get(pk=first.id).lease_owner == "agent-1"


def test_a_failing_step_fails_with_the_exceptions_text(client, coordinator):
    job = client.jobs.create("acme", "agent-task")
    (lease,) = coordinator.claim("agent-task")
    with pytest.raises(KeyError), lease, lease.step("lookup", phase="setup"):
        raise KeyError("missing")
    step = JobStep.objects.get(job_id=job.id)
    assert (step.phase, step.status, step.output) == ("setup", "failed", "KeyError: 'missing'")
    assert client.jobs.get(job.id).error == "KeyError: 'missing'"


def test_an_interrupted_coordinator_hands_the_job_back(client, coordinator):
    job = client.jobs.create("acme", "agent-task")
    (lease,) = coordinator.claim("agent-task")
    with pytest.raises(KeyboardInterrupt), lease:
        raise KeyboardInterrupt
    again = client.jobs.get(job.id)
    assert (again.status, again.attempts) == ("queued", 1)
    (second,) = coordinator.claim("agent-task")
    assert second.id == job.id


def test_a_quiet_lease_is_renewed_in_the_background(client, coordinator, settings):
    settings.RUNNER_JOB_LEASE_SECONDS = 2
    job = client.jobs.create("acme", "agent-task")
    (lease,) = coordinator.claim("agent-task")
    assert 0.5 < lease.interval < 1
    with lease:
        # Working without a word for twice the lease; the sweeper runs meanwhile.
        for _ in range(4):
            time.sleep(1)
            services.jobs_sweep()
        assert RunnerJob.objects.get(pk=job.id).lease_expires_at > timezone.now()
        lease.result = "patience"
    done = client.jobs.get(job.id)
    assert (done.status, done.result, done.attempts) == ("completed", "patience", 1)
    # Heartbeats write no events: created, queued, started, completed.
    assert JobEvent.objects.filter(job_id=job.id).count() == 4


def test_a_lease_that_expired_raises_stale_lease_at_the_next_report(
    client, coordinator, live_asgi, coordinator_key, settings
):
    settings.RUNNER_JOB_LEASE_SECONDS = 1
    job = client.jobs.create("acme", "agent-task")
    (stuck,) = coordinator.claim("agent-task", worker="stuck")
    # The coordinator stalls before it starts; its lease runs out, the sweeper queues the job
    # again and another coordinator takes it.
    time.sleep(1.2)
    assert services.jobs_sweep().requeued == 1
    settings.RUNNER_JOB_LEASE_SECONDS = 60
    with CoordinatorClient(live_asgi, coordinator_key, retry=QUICK_RETRIES) as other:
        (fresh,) = other.claim("agent-task", worker="fresh")
        assert fresh.id == job.id

        with pytest.raises(StaleLease), stuck:
            stuck.progress(10)
            pytest.fail("a stale lease must not keep reporting")
        # The stale holder changed nothing, and did not fail the job on its way out.
        current = client.jobs.get(job.id)
        assert (current.status, current.attempts, current.progress) == ("running", 2, 0)
        with fresh:
            fresh.result = "mine"
    assert client.jobs.get(job.id).result == "mine"


def test_a_job_cancelled_meanwhile_makes_the_lease_stale(client, coordinator, settings):
    settings.RUNNER_JOB_LEASE_SECONDS = 1
    job = client.jobs.create("acme", "agent-task")
    (lease,) = coordinator.claim("agent-task")
    with pytest.raises(StaleLease), lease:
        client.jobs.cancel(job.id)
        # The background renewal learns it within a third of the lease ...
        deadline = time.monotonic() + 5
        while lease.stale is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.stale is not None
        # ... and the next report raises at once.
        lease.progress(50)
    cancelled = client.jobs.get(job.id)
    assert cancelled.status == "cancelled"
    assert [e.type for e in cancelled.events][-1] == "job.cancelled"


def test_completing_without_reports_is_refused_once_stale(client, coordinator):
    job = client.jobs.create("acme", "agent-task")
    (lease,) = coordinator.claim("agent-task")
    with pytest.raises(StaleLease), lease:
        client.jobs.cancel(job.id)
        lease.result = "too late"
    assert client.jobs.get(job.id).status == "cancelled"
