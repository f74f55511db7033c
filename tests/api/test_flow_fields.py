"""Flow-control fields on create (SPEC §8): stored, echoed, refused when malformed."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import RunnerJob

URL = "/api/v1/runner-jobs/"
pytestmark = pytest.mark.django_db


def create(client, **fields):
    body = {"workspace": "acme", "type": "echo", "payload": {}, **fields}
    return client.post(URL, body, format="json")


def test_a_concurrency_key_and_limit_are_stored_and_echoed(client):
    response = create(client, concurrency_key="acct-42", concurrency_limit=3)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["concurrency_key"], body["concurrency_limit"]) == ("acct-42", 3)
    job = RunnerJob.objects.get(pk=body["id"])
    assert (job.concurrency_key, job.concurrency_limit) == ("acct-42", 3)
    detail = client.get(f"{URL}{job.pk}/").json()
    assert (detail["concurrency_key"], detail["concurrency_limit"]) == ("acct-42", 3)


def test_a_key_without_a_limit_means_one_at_a_time(client):
    body = create(client, concurrency_key="acct-42").json()
    assert body["concurrency_limit"] == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"concurrency_key": "k" * 129}, "concurrency_key"),
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"concurrency_key": "k", "concurrency_limit": 0}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": 1001}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": "two"}, "concurrency_limit"),
        ({"concurrency_limit": 2}, "concurrency_limit"),
    ],
)
def test_bad_flow_fields_are_a_400_and_write_nothing(client, fields, field):
    response = create(client, **fields)
    assert response.status_code == 400
    assert field in response.json()
    assert not RunnerJob.objects.exists()


class TestUniqueKey:
    def test_a_second_create_while_the_first_is_live_is_a_409_with_the_live_job(self, client):
        first = create(client, unique_key="sync-42").json()
        assert first["unique_key"] == "sync-42"
        response = create(client, unique_key="sync-42", payload={"other": 1})
        assert response.status_code == 409
        body = response.json()
        assert body["code"] == "duplicate_job" and body["detail"]
        assert body["job"]["id"] == first["id"] and body["job"]["status"] == "queued"
        assert RunnerJob.objects.count() == 1

    def test_once_it_ended_the_key_is_free_again(self, client):
        first = create(client, unique_key="sync-42").json()
        assert client.post(f"{URL}{first['id']}/cancel/").status_code == 200
        response = create(client, unique_key="sync-42")
        assert response.status_code == 201
        assert response.json()["id"] != first["id"]

    def test_other_keys_are_free(self, client):
        assert create(client, unique_key="a").status_code == 201
        assert create(client, unique_key="b").status_code == 201

    @pytest.mark.parametrize("key", ["", "k" * 129])
    def test_a_bad_key_is_a_400_and_writes_nothing(self, client, key):
        response = create(client, unique_key=key)
        assert response.status_code == 400 and "unique_key" in response.json()
        assert not RunnerJob.objects.exists()


class TestRunAt:
    def test_a_job_to_run_later_waits_queued_until_then(self, client):
        later = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
        body = create(client, run_at=later.isoformat()).json()
        assert body["status"] == "queued"
        assert datetime.fromisoformat(body["run_at"]) == later
        job = RunnerJob.objects.get(pk=body["id"])
        assert job.due_at == later
        assert (
            services.job_claim_next(
                actor="w", worker="w", task_id="t", exclude_types=[], tolerance=1
            )
            is None
        )

    def test_a_past_run_at_is_due_at_once(self, client):
        body = create(client, run_at="2020-01-01T00:00:00Z").json()
        job = RunnerJob.objects.get(pk=body["id"])
        assert job.due_at <= timezone.now()

    @pytest.mark.parametrize("value", ["tomorrow", 12, {"at": 1}])
    def test_a_run_at_that_is_not_a_datetime_is_a_400(self, client, value):
        response = create(client, run_at=value)
        assert response.status_code == 400 and "run_at" in response.json()
        assert not RunnerJob.objects.exists()
