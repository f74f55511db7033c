"""Retry with changes (SPEC §9): the optional body of ``POST …/retry/``, the new job's values and
the ``changed`` list of its ``job.created`` event; bad bodies change nothing."""

import pytest

from runner_jobs.events import EventType
from runner_jobs.models import JobEvent, RunnerJob
from tests.factories import job_in_state

pytestmark = pytest.mark.django_db


def retry_url(job: RunnerJob) -> str:
    return f"/api/v1/runner-jobs/{job.pk}/retry/"


@pytest.fixture
def failed(workspace) -> RunnerJob:
    return job_in_state(
        "failed",
        workspace=workspace,
        payload={"n": 1},
        priority=3,
        tags=["nightly"],
        metadata={"customer": "42"},
    )


def created_event(job_id) -> JobEvent:
    return JobEvent.objects.get(job_id=job_id, type=EventType.JOB_CREATED)


def test_a_plain_retry_keeps_every_field_and_lists_no_changes(client, failed):
    response = client.post(retry_url(failed))
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["payload"], body["priority"], body["tags"], body["metadata"]) == (
        {"n": 1},
        3,
        ["nightly"],
        {"customer": "42"},
    )
    assert "changed" not in created_event(body["id"]).payload


def test_the_new_job_takes_the_changes_and_its_event_lists_them(client, failed):
    changes = {
        "payload": {"n": 2},
        "priority": 9,
        "tags": ["nightly", "rerun"],
        "metadata": {"customer": "42"},  # the same as before: not a change
    }
    response = client.post(retry_url(failed), changes, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["retry_of"] == str(failed.pk)
    assert (body["payload"], body["priority"], body["tags"], body["metadata"]) == (
        {"n": 2},
        9,
        ["nightly", "rerun"],
        {"customer": "42"},
    )
    assert created_event(body["id"]).payload == {
        "type": "echo",
        "priority": 9,
        "retry_of": str(failed.pk),
        "changed": ["payload", "priority", "tags"],
    }
    # The old job keeps its values.
    failed.refresh_from_db()
    assert (failed.payload, failed.priority, failed.tags) == ({"n": 1}, 3, ["nightly"])


def test_one_change_leaves_the_rest_as_it_was(client, failed):
    response = client.post(retry_url(failed), {"metadata": {}}, format="json")
    body = response.json()
    assert (body["payload"], body["priority"], body["tags"], body["metadata"]) == (
        {"n": 1},
        3,
        ["nightly"],
        {},
    )
    assert created_event(body["id"]).payload["changed"] == ["metadata"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"priority": 10}, "priority"),
        ({"payload": "text"}, "payload"),
        ({"tags": ["Capital"]}, "tags"),
        ({"tags": ["with space"]}, "tags"),
        ({"metadata": {"k": "v" * 257}}, "metadata"),
        ({"type": "fail"}, "type"),
        ({"workspace": "globex"}, "workspace"),
    ],
)
def test_a_bad_body_is_400_and_changes_nothing(client, failed, body, field):
    version = failed.version
    response = client.post(retry_url(failed), body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    failed.refresh_from_db()
    assert failed.version == version
    assert not RunnerJob.objects.filter(retry_of=failed).exists()


def test_an_oversized_payload_change_is_400(client, failed, settings):
    settings.RUNNER_MAX_PAYLOAD_BYTES = 100
    response = client.post(retry_url(failed), {"payload": {"x": "y" * 200}}, format="json")
    assert response.status_code == 400
    assert "payload" in response.json()
    assert not RunnerJob.objects.filter(retry_of=failed).exists()


def test_viewers_cannot_retry_with_changes(viewer_client, failed):
    response = viewer_client.post(retry_url(failed), {"priority": 1}, format="json")
    assert response.status_code == 403
    assert not RunnerJob.objects.filter(retry_of=failed).exists()


def test_a_job_is_retried_once_with_or_without_changes(client, failed):
    assert client.post(retry_url(failed), {"priority": 1}, format="json").status_code == 201
    again = client.post(retry_url(failed), {"priority": 2}, format="json")
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"
    assert RunnerJob.objects.filter(retry_of=failed).count() == 1


def test_the_service_refuses_a_change_to_a_field_a_retry_keeps(failed):
    from runner_jobs import services

    with pytest.raises(services.JobInputError) as refused:
        services.job_retry(job_id=failed.pk, actor="system", changes={"type": "fail"})
    assert refused.value.errors == {"type": ["A retry cannot change this field."]}
    assert not RunnerJob.objects.filter(retry_of=failed).exists()
