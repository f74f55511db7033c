"""Every coordinator endpoint, its happy path and its refusals: each refusal is a 4xx that
changes nothing."""

import uuid
from datetime import timedelta
from typing import Any

import pytest

from runner_jobs.models import JobEvent, JobStep, RunnerJob
from runner_jobs.services.policies import job_type_policy_update
from tests.coordinator.conftest import BASE
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

ACTOR = "coordinator:agents"


def agent_job(status: str = "queued", **kwargs: Any) -> RunnerJob:
    return job_in_state(status, type="agent-task", payload={"prompt": "hi"}, **kwargs)


def claimed(post: Any, **claim: Any) -> dict[str, Any]:
    response = post("jobs/claim/", {"types": ["agent-task"], "worker": "w1", **claim})
    assert response.status_code == 200, response.data
    return response.json()["jobs"][0]


def unchanged(job: RunnerJob) -> None:
    """The job's row and events are exactly as before the refused request."""
    version = job.version
    job.refresh_from_db()
    assert job.version == version
    assert JobEvent.objects.filter(job=job).count() == version


def test_health(coordinator):
    response = coordinator.get(f"{BASE}/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "key": "agents", "workspaces": None}


def test_create_queues_an_agent_task_at_once(post, workspace):
    response = post(
        "jobs/", {"workspace": "acme", "type": "agent-task", "payload": {"p": 1}, "priority": 7}
    )
    assert response.status_code == 201, response.data
    body = response.json()
    assert body["status"] == "queued"
    assert body["workspace"] == "acme"
    assert body["created_by"] is None
    assert body["priority"] == 7
    assert "lease_token" not in body
    assert response["ETag"] == '"2"'
    job = RunnerJob.objects.get(pk=body["id"])
    events = list(JobEvent.objects.filter(job=job).values_list("type", "actor"))
    assert events == [("job.created", ACTOR), ("job.queued", ACTOR)]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"workspace": "nope", "type": "agent-task"}, "workspace"),
        ({"workspace": "acme", "type": "nope"}, "type"),
        ({"workspace": "acme", "type": "agent-task", "payload": [1]}, "payload"),
        ({"workspace": "acme", "type": "agent-task", "priority": 10}, "priority"),
    ],
)
def test_create_refuses_bad_input(post, workspace, body, field):
    response = post("jobs/", body)
    assert response.status_code == 400
    assert field in response.json()
    assert RunnerJob.objects.count() == 0


def test_retrieve_shows_steps_and_events(coordinator, workspace):
    job = agent_job(workspace=workspace)
    response = coordinator.get(f"{BASE}/jobs/{job.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(job.pk)
    assert body["steps"] == []
    assert [e["type"] for e in body["events"]] == ["job.created", "job.queued"]
    assert "lease_token" not in body
    assert response["ETag"] == '"2"'


@pytest.mark.parametrize("job_id", [uuid.uuid4(), "not-a-uuid"])
def test_unknown_job_is_404(coordinator, post, job_id):
    assert coordinator.get(f"{BASE}/jobs/{job_id}/").status_code == 404
    response = post(f"jobs/{job_id}/complete/", {"result": 1})
    assert response.status_code == 404
    assert response.json() == {"detail": "No such job.", "code": "not_found"}


def test_claim_starts_jobs_by_priority_then_age_with_leases(post, workspace):
    low = agent_job(workspace=workspace, priority=1)
    high_old = agent_job(workspace=workspace, priority=8)
    high_new = agent_job(workspace=workspace, priority=8)
    echo = job_in_state("queued", workspace=workspace)
    response = post("jobs/claim/", {"types": ["agent-task"], "worker": "w1", "limit": 2})
    assert response.status_code == 200
    jobs = response.json()["jobs"]
    assert [j["id"] for j in jobs] == [str(high_old.pk), str(high_new.pk)]
    for claimed_job in jobs:
        assert claimed_job["status"] == "running"
        assert claimed_job["attempts"] == 1
        row = RunnerJob.objects.get(pk=claimed_job["id"])
        assert claimed_job["lease_token"] == str(row.lease_token)
        assert row.lease_owner == "w1"
        started = JobEvent.objects.get(job=row, type="job.started")
        assert (started.actor, started.payload) == (ACTOR, {"attempt": 1, "worker": "w1"})
    low.refresh_from_db()
    echo.refresh_from_db()
    assert (low.status, echo.status) == ("queued", "queued")
    assert post("jobs/claim/", {"types": ["agent-task"], "limit": 5}).json()["jobs"][0][
        "id"
    ] == str(low.pk)
    assert post("jobs/claim/", {"types": ["agent-task"]}).json() == {"jobs": []}


def test_claim_worker_defaults_to_key_name(post, workspace):
    job = agent_job(workspace=workspace)
    post("jobs/claim/", {"types": ["agent-task"]})
    job.refresh_from_db()
    assert job.lease_owner == "agents"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"types": []},
        {"types": ["nope"]},
        {"types": ["echo"]},
        {"types": ["agent-task"], "limit": 0},
        {"types": ["agent-task"], "limit": 101},
        {"types": "agent-task"},
    ],
)
def test_claim_refuses_bad_input(post, workspace, body):
    job = agent_job(workspace=workspace)
    response = post("jobs/claim/", body)
    assert response.status_code == 400
    unchanged(job)


def test_progress_steps_events_and_complete(post, coordinator, workspace):
    job = agent_job(workspace=workspace)
    lease = claimed(post)["lease_token"]

    response = post(
        f"jobs/{job.pk}/progress/", {"progress": 30, "message": "hi", "lease_token": lease}
    )
    assert response.status_code == 200
    assert response.json()["progress"] == 30
    # The stored progress never decreases.
    assert post(f"jobs/{job.pk}/progress/", {"progress": 10}).json()["progress"] == 30

    response = post(
        f"jobs/{job.pk}/steps/", {"name": "plan", "phase": "setup", "lease_token": lease}
    )
    assert response.status_code == 201
    step = response.json()
    assert (step["ordinal"], step["status"], step["phase"]) == (1, "running", "setup")

    response = coordinator.patch(
        f"{BASE}/jobs/{job.pk}/steps/{step['id']}/",
        {"status": "completed", "output": "done", "lease_token": lease},
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["output"]) == ("completed", "done")

    response = post(
        f"jobs/{job.pk}/events/",
        {"type": "agent.tool_call", "payload": {"tool": "search"}, "step": step["id"]},
    )
    assert response.status_code == 201
    event = JobEvent.objects.get(job=job, type="agent.tool_call")
    assert (event.payload, event.step_id, event.actor) == ({"tool": "search"}, step["id"], ACTOR)

    response = post(f"jobs/{job.pk}/complete/", {"result": {"answer": 42}, "lease_token": lease})
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert response.json()["result"] == {"answer": 42}

    detail = coordinator.get(f"{BASE}/jobs/{job.pk}/").json()
    assert [s["name"] for s in detail["steps"]] == ["plan"]
    assert [e["type"] for e in detail["events"]] == [
        "job.created",
        "job.queued",
        "job.started",
        "job.progress",
        "job.progress",
        "step.started",
        "step.completed",
        "agent.tool_call",
        "job.completed",
    ]
    assert {e["actor"] for e in detail["events"][2:]} == {ACTOR}


def test_fail(post, workspace):
    job = agent_job(workspace=workspace)
    lease = claimed(post)["lease_token"]
    response = post(f"jobs/{job.pk}/fail/", {"error": "model refused", "lease_token": lease})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["error"]) == ("failed", "model refused")
    assert post(f"jobs/{job.pk}/fail/", {}).status_code == 400


@pytest.mark.parametrize("progress", [-1, 101, 50.5, "50", True, None])
def test_progress_must_be_an_integer_0_to_100(post, workspace, progress):
    job = agent_job("running", workspace=workspace)
    response = post(f"jobs/{job.pk}/progress/", {"progress": progress})
    assert response.status_code == 400
    assert "progress" in response.json()
    unchanged(job)


def test_status_running_starts_an_attempt_and_returns_its_lease(post, workspace):
    job = agent_job(workspace=workspace)
    response = post(f"jobs/{job.pk}/status/", {"status": "running", "worker": "w9"})
    assert response.status_code == 200
    body = response.json()
    job.refresh_from_db()
    assert body["status"] == "running"
    assert body["lease_token"] == str(job.lease_token)
    assert job.lease_owner == "w9"


def test_status_running_of_a_job_the_dispatcher_holds_back_is_409_not_runnable(post, workspace):
    job_type_policy_update(workspace=workspace, type="agent-task", actor="u", paused=True)
    job = agent_job(workspace=workspace)
    response = post(f"jobs/{job.pk}/status/", {"status": "running", "worker": "w9"})
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "not_runnable"
    assert "type_paused" in body["detail"] and f"{job.pk}/explain/" in body["detail"]
    unchanged(job)


def test_status_queued_hands_a_running_job_back(post, workspace):
    job = agent_job(workspace=workspace)
    lease = claimed(post)["lease_token"]
    response = post(f"jobs/{job.pk}/status/", {"status": "queued", "lease_token": lease})
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert response.json()["lease_token"] is None
    # The released lease is void: its holder can no longer report.
    response = post(f"jobs/{job.pk}/progress/", {"progress": 5, "lease_token": lease})
    assert response.status_code == 409
    assert response.json()["code"] == "stale_lease"


def test_heartbeat_extends_the_lease_and_writes_nothing_else(post, workspace, settings):
    job = agent_job(workspace=workspace)
    lease = claimed(post)["lease_token"]
    job.refresh_from_db()
    settings.RUNNER_JOB_LEASE_SECONDS = 600
    response = post(f"jobs/{job.pk}/heartbeat/", {"lease_token": lease})
    assert response.status_code == 200
    renewed = RunnerJob.objects.get(pk=job.pk)
    assert response.json() == {
        "id": str(job.pk),
        "lease_expires_at": renewed.lease_expires_at.isoformat().replace("+00:00", "Z"),
    }
    assert renewed.lease_expires_at - job.lease_expires_at > timedelta(seconds=500)
    unchanged(job)


@pytest.mark.parametrize("job_status", ["running", "cancelled"])
def test_heartbeat_with_a_lease_that_is_not_the_jobs_is_stale(post, workspace, job_status):
    job = agent_job(workspace=workspace)
    lease = claimed(post)["lease_token"]
    if job_status == "cancelled":
        post(f"jobs/{job.pk}/status/", {"status": "cancelled", "lease_token": lease})
        other = lease
    else:
        other = str(uuid.uuid4())
    job.refresh_from_db()
    response = post(f"jobs/{job.pk}/heartbeat/", {"lease_token": other})
    assert response.status_code == 409
    assert response.json()["code"] == "stale_lease"
    unchanged(job)


@pytest.mark.parametrize("body", [{}, {"lease_token": "nope"}, {"lease_token": None}])
def test_heartbeat_needs_a_lease_token(post, workspace, body):
    job = agent_job(workspace=workspace)
    claimed(post)
    job.refresh_from_db()
    response = post(f"jobs/{job.pk}/heartbeat/", body)
    assert response.status_code == 400
    assert "lease_token" in response.json()
    unchanged(job)


@pytest.mark.parametrize("status", ["started", "", "RUNNING", None])
def test_status_outside_the_state_machine_is_400(post, workspace, status):
    job = agent_job(workspace=workspace)
    response = post(f"jobs/{job.pk}/status/", {"status": status})
    assert response.status_code == 400
    assert "status" in response.json()
    unchanged(job)


@pytest.mark.parametrize("status", ["pending", "completed", "failed", "queued"])
def test_status_move_the_state_machine_forbids_is_409(post, workspace, status):
    job = agent_job(workspace=workspace)
    response = post(f"jobs/{job.pk}/status/", {"status": status})
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    unchanged(job)


@pytest.mark.parametrize(
    "path, body",
    [
        ("progress/", {"progress": 5}),
        ("complete/", {"result": 1}),
        ("fail/", {"error": "x"}),
        ("steps/", {"name": "s"}),
        ("status/", {"status": "running"}),
    ],
)
def test_reports_on_a_finished_job_are_409(post, workspace, path, body):
    job = agent_job("completed", workspace=workspace)
    response = post(f"jobs/{job.pk}/{path}", body)
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    unchanged(job)


@pytest.mark.parametrize(
    "path, body",
    [
        ("progress/", {"progress": 5}),
        ("complete/", {"result": 1}),
        ("fail/", {"error": "x"}),
        ("steps/", {"name": "s"}),
        ("events/", {"type": "agent.note"}),
        ("status/", {"status": "cancelled"}),
    ],
)
def test_reports_with_another_lease_are_stale(post, workspace, path, body):
    job = agent_job(workspace=workspace)
    claimed(post)
    job.refresh_from_db()
    response = post(f"jobs/{job.pk}/{path}", {**body, "lease_token": str(uuid.uuid4())})
    assert response.status_code == 409
    assert response.json()["code"] == "stale_lease"
    unchanged(job)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "Agent.Note"}, "type"),
        ({"type": "job.completed"}, "type"),
        ({"type": "a." + "b" * 63}, "type"),
        ({"type": "agent.note", "payload": [1]}, "payload"),
        ({"type": "agent.note", "payload": {"x": "y" * 65 * 1024}}, "payload"),
        ({"type": "agent.note", "payload": {"x": "\x00"}}, "payload"),
        ({"type": "agent.note", "step": 0}, "step"),
        ({"type": "agent.note", "lease_token": "nope"}, "lease_token"),
    ],
)
def test_custom_event_refuses_bad_input(post, workspace, body, field):
    job = agent_job("running", workspace=workspace)
    response = post(f"jobs/{job.pk}/events/", body)
    assert response.status_code == 400
    assert field in response.json()
    unchanged(job)


def test_custom_event_of_another_jobs_step_is_404(post, workspace):
    job = agent_job("running", workspace=workspace)
    other = agent_job("running", workspace=workspace)
    step = post(f"jobs/{other.pk}/steps/", {"name": "s"}).json()
    response = post(f"jobs/{job.pk}/events/", {"type": "agent.note", "step": step["id"]})
    assert response.status_code == 404
    unchanged(job)


def test_step_report_refusals(coordinator, post, workspace):
    job = agent_job("running", workspace=workspace)
    step = post(f"jobs/{job.pk}/steps/", {"name": "s"}).json()
    url = f"{BASE}/jobs/{job.pk}/steps/{step['id']}/"
    assert coordinator.patch(url, {"status": "pending"}, format="json").status_code == 400
    assert coordinator.patch(url, {"status": "done"}, format="json").status_code == 400
    for missing in (step["id"] + 1, 10**20):
        response = coordinator.patch(
            f"{BASE}/jobs/{job.pk}/steps/{missing}/", {"status": "completed"}, format="json"
        )
        assert response.status_code == 404
        assert response.json() == {"detail": "No such step for this job.", "code": "not_found"}
    assert coordinator.patch(url, {"status": "completed"}, format="json").status_code == 200
    response = coordinator.patch(url, {"status": "failed"}, format="json")
    assert response.status_code == 409
    assert JobStep.objects.get(pk=step["id"]).status == "completed"
    assert post(f"jobs/{job.pk}/steps/", {"name": "s", "phase": "nope"}).status_code == 400


def test_malformed_json_is_400(coordinator, workspace):
    job = agent_job("running", workspace=workspace)
    response = coordinator.post(
        f"{BASE}/jobs/{job.pk}/progress/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    unchanged(job)


def test_result_with_nul_is_400(post, workspace):
    job = agent_job("running", workspace=workspace)
    response = post(f"jobs/{job.pk}/complete/", {"result": {"a": "\x00"}})
    assert response.status_code == 400
    unchanged(job)


def test_a_key_without_workspaces_touches_every_workspace(post):
    other = WorkspaceFactory(slug="other")
    job = agent_job(workspace=other)
    assert post(f"jobs/{job.pk}/status/", {"status": "running"}).status_code == 200
