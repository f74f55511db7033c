"""Racing reporters over HTTP: real threads, each with its own PostgreSQL connection."""

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.services.jobs import job_recover_lost
from tests.coordinator.conftest import BASE, key_client, make_key
from tests.factories import WorkspaceFactory, job_in_state
from tests.runner_jobs.test_concurrency import race

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    "with_lease, refusal",
    [
        (False, "invalid_transition"),
        # The winner's completion ended the attempt's lease, so the others' token is stale.
        (True, "stale_lease"),
    ],
)
def test_fifty_racing_completions_one_200_forty_nine_409(with_lease, refusal):
    raw_key = make_key()
    job = job_in_state("running", type="agent-task")
    lease = {"lease_token": str(job.lease_token)} if with_lease else {}
    clients = [key_client(raw_key) for _ in range(50)]

    def complete(n: int, client: Any) -> Any:
        return lambda: client.post(
            f"{BASE}/jobs/{job.pk}/complete/", {"result": {"by": n}, **lease}, format="json"
        )

    responses = race([complete(n, c) for n, c in enumerate(clients)])
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: 49}, responses
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {refusal}
    job.refresh_from_db()
    winner = next(r for r in responses if r.status_code == 200)
    assert job.status == "completed"
    assert job.result == winner.json()["result"]
    assert JobEvent.objects.filter(job=job, type="job.completed").count() == 1
    # created, queued, started, completed: nothing else was written.
    assert job.version == 4 == JobEvent.objects.filter(job=job).count()


def test_ten_claimers_over_two_hundred_jobs_claim_each_exactly_once():
    raw_key = make_key()
    workspace = WorkspaceFactory()
    jobs = [
        services.job_create(
            workspace=workspace,
            spec=services.JobSpec(type="agent-task", payload={"n": n}),
            actor="system",
        ).job
        for n in range(200)
    ]

    def claimer(worker: str) -> Any:
        def run() -> list[tuple[str, str]]:
            client = key_client(raw_key)
            claims: list[tuple[str, str]] = []
            while True:
                response = client.post(
                    f"{BASE}/jobs/claim/",
                    {"types": ["agent-task"], "worker": worker, "limit": 7},
                    format="json",
                )
                assert response.status_code == 200, response.content
                batch = response.json()["jobs"]
                if not batch:
                    return claims
                claims += [(j["id"], j["lease_token"]) for j in batch]

        return run

    per_worker = race([claimer(f"w{i}") for i in range(10)])
    assert all(isinstance(r, list) for r in per_worker), per_worker
    claimed_ids = [job_id for claims in per_worker for job_id, _ in claims]
    assert len(claimed_ids) == 200
    assert Counter(claimed_ids).most_common(1)[0][1] == 1
    assert set(claimed_ids) == {str(j.pk) for j in jobs}
    # Nobody was starved by the others' locks: SKIP LOCKED let several claimers work.
    assert sum(1 for claims in per_worker if claims) > 1
    rows = {str(j.pk): j for j in RunnerJob.objects.all()}
    for claims, worker in zip(per_worker, [f"w{i}" for i in range(10)], strict=True):
        for job_id, lease in claims:
            row = rows[job_id]
            assert (row.status, row.attempts, row.lease_owner) == ("running", 1, worker)
            assert str(row.lease_token) == lease
    assert JobEvent.objects.filter(type="job.started").count() == 200


def test_stale_claimer_cannot_complete_after_the_sweeper_requeued_its_job():
    first = key_client(make_key("first"))
    second = key_client(make_key("second"))
    job = job_in_state("queued", type="agent-task")

    def claim(client: Any) -> str:
        response = client.post(f"{BASE}/jobs/claim/", {"types": ["agent-task"]}, format="json")
        (claimed,) = response.json()["jobs"]
        assert claimed["id"] == str(job.pk)
        return str(claimed["lease_token"])

    old_lease = claim(first)
    # The first claimer goes quiet past its lease; the sweeper requeues the job.
    RunnerJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    job_recover_lost(job_id=job.pk)
    new_lease = claim(second)
    assert new_lease != old_lease

    def complete(client: Any, lease: str) -> Any:
        return client.post(
            f"{BASE}/jobs/{job.pk}/complete/",
            {"result": {"lease": lease}, "lease_token": lease},
            format="json",
        )

    stale = complete(first, old_lease)
    assert stale.status_code == 409
    assert stale.json()["code"] == "stale_lease"
    job.refresh_from_db()
    assert (job.status, job.attempts, str(job.lease_token)) == ("running", 2, new_lease)

    fresh = complete(second, new_lease)
    assert fresh.status_code == 200
    job.refresh_from_db()
    assert (job.status, job.result) == ("completed", {"lease": new_lease})
    completed = JobEvent.objects.get(job=job, type="job.completed")
    assert completed.actor == "coordinator:second"


def test_ten_concurrent_reporters_on_one_job_are_never_refused():
    """Progress and custom events commute: ten threads posting them to one running job over the
    API all get 2xx (no concurrent_update), every accepted report has its event, the stored
    progress is the highest reported, and the job's version counts its events."""
    raw_key = make_key()
    job = job_in_state("running", type="agent-task")
    lease = {"lease_token": str(job.lease_token)}
    reports_per_thread = 20

    def reporter(t: int) -> Any:
        client = key_client(raw_key)

        def run() -> list[int]:
            codes = []
            for n in range(reports_per_thread):
                body: dict[str, Any]
                if n % 2:
                    body = {"type": "agent.tick", "payload": {"t": t, "n": n}, **lease}
                    response = client.post(f"{BASE}/jobs/{job.pk}/events/", body, format="json")
                else:
                    body = {"progress": (t * 7 + n) % 100, **lease}
                    response = client.post(f"{BASE}/jobs/{job.pk}/progress/", body, format="json")
                codes.append(response.status_code)
            return codes

        return run

    per_thread = race([reporter(t) for t in range(10)])
    codes = Counter(code for thread in per_thread for code in thread)
    assert codes == {200: 100, 201: 100}, per_thread
    job.refresh_from_db()
    progress = JobEvent.objects.filter(job=job, type="job.progress")
    ticks = JobEvent.objects.filter(job=job, type="agent.tick")
    assert (progress.count(), ticks.count()) == (100, 100)
    reported = [(t * 7 + n) % 100 for t in range(10) for n in range(0, reports_per_thread, 2)]
    assert job.progress == max(reported)
    assert job.version == JobEvent.objects.filter(job=job).count() == 3 + 200
