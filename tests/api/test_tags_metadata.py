"""Tags and metadata (SPEC §9): on create (consumer and coordinator), in every representation,
the list filters ``tag`` and ``metadata.<key>``, the rules, and unknown filter keys."""

import json

import pytest
from django.db import connection

from runner_jobs.labels import MAX_METADATA_KEYS, MAX_TAGS
from runner_jobs.models import JobEvent, RunnerJob
from tests.coordinator.conftest import key_client, make_key
from tests.factories import job_in_state

URL = "/api/v1/runner-jobs/"
pytestmark = pytest.mark.django_db


def create(client, **fields):
    body = {"workspace": "acme", "type": "echo", "payload": {}, **fields}
    return client.post(URL, body, format="json")


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [job["id"] for job in response.json()["results"]]


def test_tags_and_metadata_are_in_every_representation(client):
    response = create(client, tags=["env:prod", "nightly", "nightly"], metadata={"customer": "42"})
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    # Repeats are dropped, order kept.
    assert response.json()["tags"] == ["env:prod", "nightly"]
    assert response.json()["metadata"] == {"customer": "42"}
    detail = client.get(f"{URL}{job_id}/").json()
    assert (detail["tags"], detail["metadata"]) == (["env:prod", "nightly"], {"customer": "42"})
    listed = client.get(URL).json()["results"][0]
    assert (listed["tags"], listed["metadata"]) == (["env:prod", "nightly"], {"customer": "42"})
    job = RunnerJob.objects.get(pk=job_id)
    assert (job.tags, job.metadata) == (["env:prod", "nightly"], {"customer": "42"})


def test_without_tags_and_metadata_they_are_empty(client):
    body = create(client).json()
    assert (body["tags"], body["metadata"]) == ([], {})


def test_the_coordinator_creates_with_tags_and_metadata(workspace):
    response = key_client(make_key()).post(
        "/api/v1/coordinator/jobs/",
        {
            "workspace": "acme",
            "type": "agent-task",
            "payload": {},
            "tags": ["agent"],
            "metadata": {"run": "7"},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert (response.json()["tags"], response.json()["metadata"]) == (["agent"], {"run": "7"})


TOO_MANY_TAGS = [f"t{n}" for n in range(MAX_TAGS + 1)]
TOO_MANY_KEYS = {f"k{n}": "v" for n in range(MAX_METADATA_KEYS + 1)}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tags": ["Prod"]}, "tags"),
        ({"tags": ["two words"]}, "tags"),
        ({"tags": [" padded"]}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"tags": ["-leading-dash"]}, "tags"),
        ({"tags": ["x" * 65]}, "tags"),
        ({"tags": TOO_MANY_TAGS}, "tags"),
        ({"tags": "not-a-list"}, "tags"),
        ({"tags": [["nested"]]}, "tags"),
        ({"metadata": TOO_MANY_KEYS}, "metadata"),
        ({"metadata": {"k": "v" * 257}}, "metadata"),
        ({"metadata": {"k": {"nested": "object"}}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "nul\x00"}}, "metadata"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
    ],
)
def test_bad_tags_or_metadata_are_400_and_write_nothing(client, fields, field):
    response = create(client, **fields)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not RunnerJob.objects.exists()
    assert not JobEvent.objects.exists()


def test_limits_are_inclusive(client):
    response = create(
        client,
        tags=[f"t{n}" for n in range(MAX_TAGS - 1)] + ["x" * 64],
        metadata={**{f"k{n}": "v" for n in range(MAX_METADATA_KEYS - 1)}, "k": "v" * 256},
    )
    assert response.status_code == 201, response.content


class TestListFilters:
    @pytest.fixture
    def jobs(self, workspace, other_workspace):
        return {
            "a": job_in_state(workspace=workspace, tags=["red"], metadata={"customer": "42"}),
            "ab": job_in_state(
                workspace=workspace,
                tags=["red", "blue"],
                metadata={"customer": "42", "region": "eu"},
            ),
            "b": job_in_state("queued", workspace=workspace, tags=["blue"], metadata={}),
            "none": job_in_state(workspace=workspace),
            "other": job_in_state(
                workspace=other_workspace, tags=["red"], metadata={"customer": "42"}
            ),
        }

    def expect(self, jobs, *names):
        return [str(jobs[name].id) for name in names]

    def test_one_tag(self, client, jobs):
        assert ids(client.get(URL, {"tag": "red"})) == self.expect(jobs, "ab", "a")

    def test_repeated_tags_mean_all_of_them(self, client, jobs):
        assert ids(client.get(URL, {"tag": ["red", "blue"]})) == self.expect(jobs, "ab")
        assert ids(client.get(URL, {"tag": ["red", "green"]})) == []

    def test_metadata_exact(self, client, jobs):
        response = client.get(URL, {"metadata.customer": "42"})
        assert ids(response) == self.expect(jobs, "ab", "a")
        assert ids(client.get(URL, {"metadata.customer": "4"})) == []

    def test_metadata_keys_together_and_with_other_filters(self, client, jobs):
        both = {"metadata.customer": "42", "metadata.region": "eu"}
        assert ids(client.get(URL, both)) == self.expect(jobs, "ab")
        mixed = {"tag": "blue", "status": "queued"}
        assert ids(client.get(URL, mixed)) == self.expect(jobs, "b")

    def test_empty_values_filter_nothing(self, client, jobs):
        assert len(ids(client.get(URL, {"tag": ""}))) == 4

    def test_paging_parameters_are_still_accepted(self, client, jobs):
        response = client.get(URL, {"tag": "red", "page_size": 1})
        assert ids(response) == self.expect(jobs, "ab")
        assert ids(client.get(response.json()["next"])) == self.expect(jobs, "a")

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"colour": "red"}, "colour"),
            ({"tags": "red"}, "tags"),
            ({"metadata": "customer"}, "metadata"),
            ({"tag": "Red"}, "tag"),
            ({"tag": "%s%(x)s"}, "tag"),
            ({"metadata.k%s": ["1", "2"]}, "metadata"),
            ({"tag": "a,b"}, "tag"),
            ({"metadata.customer": "x" * 257}, "metadata"),
            ({"metadata.customer": ["1", "2"]}, "metadata"),
        ],
    )
    def test_bad_filters_are_400_with_field_errors(self, client, jobs, params, field):
        response = client.get(URL, params)
        assert response.status_code == 400, response.content
        assert field in response.json()

    def test_an_unknown_key_names_the_known_ones(self, client, jobs):
        message = client.get(URL, {"colour": "red"}).json()["colour"][0]
        assert "tag" in message
        assert "metadata.<key>" in message


@pytest.mark.django_db(transaction=True)
def test_the_filters_can_use_the_gin_indexes(workspace):
    """The ORM's lookups are the operators the indexes' operator classes serve (``@>`` for the
    array and jsonb_path_ops), so PostgreSQL can use them; with sequential scans off it must."""
    job_in_state(workspace=workspace, tags=["red"], metadata={"customer": "42"})
    plans = []
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        for lookup in ({"tags__contains": ["red"]}, {"metadata__contains": {"customer": "42"}}):
            plan = RunnerJob.objects.filter(**lookup).explain(format="json")
            plans.append(json.dumps(json.loads(plan)))
        cursor.execute("RESET enable_seqscan")
    assert "job_tags_gin_idx" in plans[0]
    assert "job_metadata_gin_idx" in plans[1]


def test_an_idempotent_repeat_compares_tags_and_metadata(client):
    def keyed(**fields):
        body = {"workspace": "acme", "type": "echo", "payload": {}, **fields}
        return client.post(URL, body, format="json", headers={"Idempotency-Key": "k-1"})

    first = keyed(tags=["a"], metadata={"k": "v"})
    assert first.status_code == 201
    assert keyed(tags=["a"], metadata={"k": "v"}).status_code == 200
    assert keyed(tags=["b"], metadata={"k": "v"}).status_code == 422
    assert RunnerJob.objects.count() == 1


@pytest.mark.parametrize(
    ("check", "value"),
    [
        ("tags_errors", "not-a-list"),
        ("tags_errors", [1]),
        ("metadata_errors", ["not", "an", "object"]),
        ("metadata_errors", {1: "non-string key"}),
        ("metadata_errors", {"k": "nul\x00"}),
        ("metadata_errors", {"k\x00": "v"}),
    ],
)
def test_the_rules_refuse_what_json_can_say_but_a_label_cannot_be(check, value):
    from runner_jobs import labels

    assert getattr(labels, check)(value)
