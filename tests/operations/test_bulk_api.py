"""Bulk cancel and retry by filter (SPEC §9), through the API: the operation, its counts, its
events, its fixed job set, cancelling it, and every refusal (nothing written)."""

import uuid

import pytest

from runner_jobs import services
from runner_jobs.events import EventType
from runner_jobs.models import JobEvent, Operation, OperationJob, RunnerJob
from tests.factories import MembershipFactory, job_in_state

BULK = "/api/v1/runner-jobs/bulk/"
OPERATIONS = "/api/v1/operations/"
pytestmark = pytest.mark.django_db


def bulk(client, action="cancel", workspace="acme", **filters):
    return client.post(
        BULK, {"workspace": workspace, "action": action, "filter": filters}, format="json"
    )


def run(operation_id) -> dict:
    services.operation_run(operation_id=operation_id)
    return {
        k: v
        for k, v in Operation.objects.filter(pk=operation_id).values()[0].items()
        if k in ("status", "matched", "succeeded", "skipped", "failed")
    }


def test_bulk_cancel_by_tag_cancels_the_matched_jobs(client, workspace, other_workspace):
    queued = [job_in_state("queued", workspace=workspace, tags=["batch-7"]) for _ in range(3)]
    done = job_in_state("completed", workspace=workspace, tags=["batch-7"])
    untagged = job_in_state("queued", workspace=workspace)
    elsewhere = job_in_state("queued", workspace=other_workspace, tags=["batch-7"])

    response = bulk(client, tag=["batch-7"])
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == f"{OPERATIONS}{body['id']}/"
    assert body | {"id": None, "created_at": None} == {
        "id": None,
        "workspace": "acme",
        "action": "cancel",
        "filter": {"tag": ["batch-7"]},
        "status": "running",
        "matched": 4,
        "succeeded": 0,
        "skipped": 0,
        "failed": 0,
        "created_by": "alice",
        "created_at": None,
        "finished_at": None,
    }

    assert run(body["id"]) == {
        "status": "completed",
        "matched": 4,
        "succeeded": 3,
        "skipped": 1,
        "failed": 0,
    }
    for job in queued:
        job.refresh_from_db()
        assert job.status == "cancelled"
        event = JobEvent.objects.get(job=job, type=EventType.JOB_CANCELLED)
        assert (event.actor, event.payload) == (
            "user:alice",
            {"from": "queued", "operation": body["id"]},
        )
    for job, status in ((done, "completed"), (untagged, "queued"), (elsewhere, "queued")):
        job.refresh_from_db()
        assert job.status == status
    read = client.get(response["Location"]).json()
    assert (read["status"], read["succeeded"], read["finished_at"] is not None) == (
        "completed",
        3,
        True,
    )


def test_bulk_retry_by_metadata_and_status(client, workspace):
    failed = [
        job_in_state("failed", workspace=workspace, metadata={"customer": "42"}) for _ in range(2)
    ]
    already = job_in_state("failed", workspace=workspace, metadata={"customer": "42"})
    services.job_retry(job_id=already.pk, actor="system")
    job_in_state("failed", workspace=workspace, metadata={"customer": "7"})

    response = bulk(client, "retry", **{"metadata.customer": "42", "status": "failed"})
    assert response.status_code == 202, response.content
    operation_id = response.json()["id"]
    assert run(operation_id) == {
        "status": "completed",
        "matched": 3,
        "succeeded": 2,
        "skipped": 1,
        "failed": 0,
    }
    for job in failed:
        new = RunnerJob.objects.get(retry_of=job)
        assert (new.metadata, new.created_by.username) == ({"customer": "42"}, "alice")
        retried = JobEvent.objects.get(job=job, type=EventType.JOB_RETRIED)
        assert retried.payload == {"retry_job_id": str(new.pk), "operation": operation_id}
        created = JobEvent.objects.get(job=new, type=EventType.JOB_CREATED)
        assert created.payload["operation"] == operation_id
        assert created.actor == "user:alice"


def test_the_job_set_is_fixed_when_the_operation_is_created(client, workspace):
    before = job_in_state("queued", workspace=workspace, tags=["t"])
    operation_id = bulk(client, tag=["t"]).json()["id"]
    after = job_in_state("queued", workspace=workspace, tags=["t"])
    assert list(OperationJob.objects.values_list("job_id", flat=True)) == [before.pk]
    assert run(operation_id)["succeeded"] == 1
    # Each batch deletes its rows with its changes: nothing is left to do.
    assert not OperationJob.objects.exists()
    after.refresh_from_db()
    assert after.status == "queued"


def test_a_filter_that_matches_nothing_is_completed_at_once(client, workspace):
    response = bulk(client, tag=["nothing-has-this"])
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["matched"]) == ("completed", 0)
    assert response.json()["finished_at"] is not None


def test_the_filter_can_name_its_own_workspace(client, workspace):
    job_in_state("queued", workspace=workspace)
    response = client.post(
        BULK,
        {
            "workspace": "acme",
            "action": "cancel",
            "filter": {"workspace": "acme", "status": ["queued", "pending"]},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["matched"] == 1


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"filter": {"workspace": "globex"}}, {"filter": {"workspace": None}}),
        ({"filter": {"tag": ["Capital"]}}, {"filter": {"tag": None}}),
        ({"filter": {"tag": ["two words"]}}, {"filter": {"tag": None}}),
        ({"filter": {"tag": ["100%s"]}}, {"filter": {"tag": None}}),
        ({"filter": {"colour": "red"}}, {"filter": {"colour": None}}),
        ({"filter": {"cursor": "abc"}}, {"filter": {"cursor": None}}),
        ({"filter": {"status": "lost"}}, {"filter": {"status": None}}),
        ({"filter": {"created_after": "yesterday"}}, {"filter": {"created_after": None}}),
        ({"filter": {"metadata.k": "v" * 257}}, {"filter": {"metadata": None}}),
        ({"filter": {"type": "t" * 65}}, {"filter": {"type": None}}),
        ({"filter": {"agent_task_id": "a" * 256}}, {"filter": {"agent_task_id": None}}),
        ({"action": "delete"}, {"action": None}),
        ({"filter": "status=failed"}, {"filter": None}),
    ],
)
def test_bad_bulk_requests_are_400_with_field_errors_and_write_nothing(
    client, workspace, other_workspace, body, errors
):
    job_in_state("queued", workspace=workspace)
    response = client.post(
        BULK, {"workspace": "acme", "action": "cancel", "filter": {}, **body}, format="json"
    )
    assert response.status_code == 400, response.content
    found = response.json()
    for name, nested in errors.items():
        assert name in found
        for inner in nested or {}:
            assert inner in found[name], found
    assert not Operation.objects.exists()
    assert not OperationJob.objects.exists()
    assert RunnerJob.objects.get().status == "queued"


def test_viewers_get_403_on_every_write(viewer_client, client, workspace):
    job = job_in_state("queued", workspace=workspace)
    assert bulk(viewer_client).status_code == 403
    assert not Operation.objects.exists()
    operation_id = bulk(client, tag=["x"]).json()["id"]
    job_in_state("queued", workspace=workspace, tags=["x"])
    running = bulk(client).json()["id"]
    assert viewer_client.post(f"{OPERATIONS}{running}/cancel/").status_code == 403
    assert Operation.objects.get(pk=running).status == "running"
    # Reads are for every role.
    assert viewer_client.get(f"{OPERATIONS}{operation_id}/").status_code == 200
    job.refresh_from_db()
    assert job.status == "queued"


def test_a_workspace_that_is_not_yours_is_404(client, other_workspace):
    response = bulk(client, workspace="globex")
    assert response.status_code == 404
    assert not Operation.objects.exists()


def test_operations_are_scoped_to_your_workspaces(client, workspace, other_workspace, user):
    mine = bulk(client).json()["id"]
    stranger = MembershipFactory(workspace=other_workspace).user
    theirs = services.operation_create(
        workspace=other_workspace, action="cancel", filters={}, actor="user:x", created_by=stranger
    )
    listed = client.get(OPERATIONS).json()
    assert [o["id"] for o in listed["results"]] == [mine]
    for missing in (theirs.pk, uuid.uuid4(), "not-a-uuid"):
        assert client.get(f"{OPERATIONS}{missing}/").status_code == 404
        assert client.post(f"{OPERATIONS}{missing}/cancel/").status_code == 404
    assert client.get(OPERATIONS, {"status": "completed"}).json()["results"][0]["id"] == mine
    assert client.get(OPERATIONS, {"workspace": "globex"}).json()["results"] == []
    assert client.get(OPERATIONS, {"status": "lost"}).status_code == 400


def test_cancelling_an_operation_stops_it_between_batches(client, workspace, monkeypatch):
    monkeypatch.setattr("runner_jobs.services.operations.OPERATION_BATCH_SIZE", 2)
    jobs = [job_in_state("queued", workspace=workspace) for _ in range(5)]
    operation_id = bulk(client).json()["id"]
    # One batch, as the task would run it, then the cancel arrives.
    services.operation_run(operation_id=operation_id, seconds=0)
    response = client.post(f"{OPERATIONS}{operation_id}/cancel/")
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["succeeded"]) == ("cancelled", 2)
    assert response.json()["finished_at"] is not None
    # A run that still arrives (the message it sent itself) does nothing more.
    assert run(operation_id) == {
        "status": "cancelled",
        "matched": 5,
        "succeeded": 2,
        "skipped": 0,
        "failed": 0,
    }
    statuses = sorted(RunnerJob.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status"))
    assert statuses == [("cancelled",)] * 2 + [("queued",)] * 3
    again = client.post(f"{OPERATIONS}{operation_id}/cancel/")
    assert (again.status_code, again.json()["code"]) == (409, "invalid_transition")
