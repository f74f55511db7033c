""" "Why isn't it running?" (SPEC §9): each reason read from the dispatcher's own rule, so that
what explain calls runnable is what a claim starts, and what it says blocks a job does."""

from datetime import timedelta

import pytest
from django.utils import timezone

from runner_jobs import explain as explain_module
from runner_jobs import services
from runner_jobs.models import RunnerJob
from runner_jobs.registry import external_type_names
from runner_jobs.services.policies import job_type_policy_update
from tests.api.conftest import token_client
from tests.factories import UserFactory, job_in_state

pytestmark = pytest.mark.django_db

URL = "/api/v1/runner-jobs/{}/explain/"


def explain(client, job: RunnerJob) -> dict:
    response = client.get(URL.format(job.pk))
    assert response.status_code == 200, response.content
    return response.json()


def codes(body: dict) -> list[str]:
    return [reason["code"] for reason in body["reasons"]]


def a_live_worker() -> None:
    services.worker_seen(kind="celery", name="w@host", hostname="host", pid=1, started=True)


def claim_next() -> RunnerJob | None:
    return services.job_claim_next(
        actor="worker", worker="w", task_id="t", exclude_types=external_type_names(), tolerance=0
    )


def test_a_runnable_job_waits_for_a_worker_slot_with_the_jobs_ahead_of_it(client, workspace):
    a_live_worker()
    first = job_in_state("queued", workspace=workspace, priority=5)
    urgent = job_in_state("queued", workspace=workspace, priority=9)
    mine = job_in_state("queued", workspace=workspace, priority=5)
    body = explain(client, mine)
    assert (body["job"], body["status"], body["runnable"]) == (str(mine.pk), "queued", True)
    assert body["reasons"] == [
        {
            "code": "waiting_for_worker",
            "detail": "Waiting for a free worker slot; 2 job(s) of its workspace go first.",
            "ahead": 2,
        }
    ]
    assert explain(client, urgent)["reasons"][0]["ahead"] == 0
    # What explain calls runnable, the dispatcher starts, in the order it said.
    assert [claim_next().pk for _ in range(3)] == [urgent.pk, first.pk, mine.pk]


def test_the_jobs_ahead_are_counted_up_to_a_bound(client, workspace, monkeypatch):
    """A backlog of a million jobs would cost a full count; the count stops at the bound and
    says so."""
    monkeypatch.setattr(explain_module, "AHEAD_COUNT_MAX", 2)
    a_live_worker()
    for _ in range(3):
        job_in_state("queued", workspace=workspace)
    mine = job_in_state("queued", workspace=workspace)
    (reason,) = explain(client, mine)["reasons"]
    assert reason["ahead"] == 2
    assert (
        reason["detail"]
        == "Waiting for a free worker slot; 2 or more job(s) of its workspace go first."
    )


def test_without_a_live_worker_it_says_so(client, workspace):
    job = job_in_state("queued", workspace=workspace)
    assert codes(explain(client, job)) == ["no_workers"]
    services.worker_seen(kind="celery", name="w@host", started=True)
    services.worker_stopped(kind="celery", name="w@host")
    assert codes(explain(client, job)) == ["no_workers"]


def test_a_future_run_at_is_not_due_and_the_claim_agrees(client, workspace):
    a_live_worker()
    run_at = timezone.now() + timedelta(hours=1)
    job = job_in_state("queued", workspace=workspace, run_at=run_at)
    body = explain(client, job)
    assert body["runnable"] is False
    (reason,) = body["reasons"]
    assert (reason["code"], reason["detail"]) == ("not_due", "Its run_at has not come.")
    assert reason["run_at"] == reason["due_at"] and reason["run_at"] is not None
    assert claim_next() is None


def test_a_retry_delay_is_not_due_either(client, workspace):
    job = job_in_state("running", workspace=workspace)
    services.job_attempt_failed(
        job_id=job.pk, error="flaky", actor="worker", retry_delay=600, lease_token=job.lease_token
    )
    (reason,) = explain(client, job)["reasons"]
    assert (reason["code"], reason["detail"]) == ("not_due", "Waiting out a retry delay.")


def test_a_full_concurrency_key_names_the_jobs_holding_it(client, workspace):
    holder = job_in_state("running", workspace=workspace, concurrency_key="acct-1")
    waiting = job_in_state("queued", workspace=workspace, concurrency_key="acct-1")
    body = explain(client, waiting)
    assert body["runnable"] is False
    (reason,) = body["reasons"]
    assert reason["code"] == "concurrency_limit"
    assert (reason["key"], reason["limit"], reason["running"]) == ("acct-1", 1, [str(holder.pk)])
    assert claim_next() is None


def test_a_job_past_its_expiry_will_not_start(client, workspace):
    job = job_in_state("queued", workspace=workspace, ttl_seconds=5)
    RunnerJob.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    body = explain(client, job)
    assert (body["runnable"], codes(body)) == (False, ["expired"])
    assert claim_next() is None


def test_several_reasons_at_once(client, workspace):
    job_in_state("running", workspace=workspace, concurrency_key="k")
    job = job_in_state(
        "queued",
        workspace=workspace,
        concurrency_key="k",
        run_at=timezone.now() + timedelta(hours=1),
    )
    assert codes(explain(client, job)) == ["not_due", "concurrency_limit"]


def test_an_external_job_waits_for_a_coordinator(client, workspace):
    job = job_in_state("queued", workspace=workspace, type="agent-task")
    (reason,) = explain(client, job)["reasons"]
    assert (reason["code"], reason["last_claim_at"]) == ("waiting_for_coordinator", None)
    services.worker_seen(kind="coordinator", name="key-1")
    (reason,) = explain(client, job)["reasons"]
    assert reason["last_claim_at"] is not None


def test_an_ended_job_is_terminal_and_a_running_one_has_no_reasons(client, workspace):
    ended = job_in_state("completed", workspace=workspace)
    body = explain(client, ended)
    assert (body["runnable"], body["reasons"]) == (
        False,
        [{"code": "terminal", "detail": "The job has ended: completed."}],
    )
    running = explain(client, job_in_state("running", workspace=workspace))
    assert (running["runnable"], running["reasons"]) == (False, [])


def test_a_pending_job_is_not_runnable_until_handed_over(client, workspace):
    a_live_worker()
    body = explain(client, job_in_state("pending", workspace=workspace))
    assert (body["status"], body["runnable"], codes(body)) == (
        "pending",
        False,
        ["waiting_for_worker"],
    )


def test_a_viewer_may_ask_and_strangers_get_404(viewer_client, workspace):
    job = job_in_state("queued", workspace=workspace)
    assert viewer_client.get(URL.format(job.pk)).status_code == 200
    stranger = token_client(UserFactory(username="mallory"))
    assert stranger.get(URL.format(job.pk)).status_code == 404


def test_unauthenticated_is_401(workspace):
    from rest_framework.test import APIClient

    job = job_in_state("queued", workspace=workspace)
    assert APIClient().get(URL.format(job.pk)).status_code == 401


def test_a_paused_or_full_capped_type_is_the_reason(client, workspace):
    a_live_worker()
    job_type_policy_update(workspace=workspace, type="echo", actor="u", paused=True)
    waiting = job_in_state("queued", workspace=workspace)
    body = explain(client, waiting)
    assert (body["runnable"], body["reasons"]) == (
        False,
        [{"code": "type_paused", "detail": "echo is paused in this workspace."}],
    )
    assert claim_next() is None
    job_type_policy_update(workspace=workspace, type="echo", actor="u", paused=False, max_running=1)
    running = claim_next()
    assert running is not None and running.pk == waiting.pk
    second = job_in_state("queued", workspace=workspace)
    assert explain(client, second)["reasons"] == [
        {
            "code": "type_max_running",
            "detail": "At most 1 echo job(s) run at once in this workspace; all taken.",
            "max_running": 1,
            "running": [str(running.pk)],
        }
    ]
    assert claim_next() is None
