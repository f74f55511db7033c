"""Ten concurrent creates with one Idempotency-Key, over HTTP, each on its own connection."""

from collections import Counter

import pytest

from runner_jobs.models import JobEvent, RunnerJob
from tests.api.conftest import token_client
from tests.runner_jobs.test_concurrency import race

pytestmark = pytest.mark.django_db(transaction=True)


def test_ten_concurrent_creates_with_one_key_make_exactly_one_job(user, member):
    body = {"workspace": "acme", "type": "echo", "payload": {"n": 1}}
    clients = [token_client(user) for _ in range(10)]

    def post(client):
        return lambda: client.post(
            "/api/v1/runner-jobs/", body, format="json", headers={"Idempotency-Key": "once"}
        )

    responses = race([post(c) for c in clients])
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 9}
    assert len({r.json()["id"] for r in responses}) == 1
    job = RunnerJob.objects.get()
    assert str(job.id) == responses[0].json()["id"]
    assert JobEvent.objects.filter(job=job, type="job.created").count() == 1


def test_concurrent_creates_with_one_key_and_different_bodies_make_one_job(user, member):
    clients = [token_client(user) for _ in range(6)]

    def post(client, n):
        body = {"workspace": "acme", "type": "echo", "payload": {"n": n % 2}}
        return lambda: client.post(
            "/api/v1/runner-jobs/", body, format="json", headers={"Idempotency-Key": "k"}
        )

    responses = race([post(c, i) for i, c in enumerate(clients)])
    job = RunnerJob.objects.get()
    winners = [r for r in responses if r.status_code in (200, 201)]
    losers = [r for r in responses if r.status_code == 422]
    assert len(winners) + len(losers) == 6
    assert {r.json()["id"] for r in winners} == {str(job.id)}
    assert all(r.json()["payload"] == job.payload for r in winners)
    assert {r.json()["code"] for r in losers} <= {"idempotency_conflict"}
    assert len(losers) == 3
