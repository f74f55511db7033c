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


class TestTtlAndTimeout:
    def test_a_ttl_sets_the_expiry_from_the_due_time_and_both_are_echoed(self, client):
        before = timezone.now()
        body = create(client, ttl_seconds=60, timeout_seconds=30).json()
        assert (body["ttl_seconds"], body["timeout_seconds"]) == (60, 30)
        expires_at = datetime.fromisoformat(body["expires_at"])
        assert before + timedelta(seconds=60) <= expires_at <= timezone.now() + timedelta(60)
        detail = client.get(f"{URL}{body['id']}/").json()
        assert (detail["ttl_seconds"], detail["expires_at"]) == (60, body["expires_at"])

    def test_with_a_run_at_the_ttl_counts_from_it(self, client):
        later = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
        body = create(client, run_at=later.isoformat(), ttl_seconds=300).json()
        assert datetime.fromisoformat(body["expires_at"]) == later + timedelta(seconds=300)

    def test_unset_fields_are_null(self, client):
        body = create(client).json()
        assert (body["ttl_seconds"], body["expires_at"], body["timeout_seconds"]) == (
            None,
            None,
            None,
        )

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"ttl_seconds": 0}, "ttl_seconds"),
            ({"ttl_seconds": -5}, "ttl_seconds"),
            ({"ttl_seconds": 30 * 24 * 3600 + 1}, "ttl_seconds"),
            ({"ttl_seconds": "soon"}, "ttl_seconds"),
            ({"timeout_seconds": 0}, "timeout_seconds"),
            ({"timeout_seconds": 10**9}, "timeout_seconds"),
            ({"timeout_seconds": 1.5}, "timeout_seconds"),
        ],
    )
    def test_out_of_range_values_are_a_400_and_write_nothing(self, client, fields, field):
        response = create(client, **fields)
        assert response.status_code == 400
        assert field in response.json()
        assert not RunnerJob.objects.exists()

    def test_the_service_refuses_them_for_every_other_caller(self, workspace):
        spec = services.JobSpec(type="echo", payload={}, ttl_seconds=0, timeout_seconds=10**9)
        with pytest.raises(services.JobInputError) as refused:
            services.job_create(workspace=workspace, spec=spec, actor="system")
        assert set(refused.value.errors) == {"ttl_seconds", "timeout_seconds"}
