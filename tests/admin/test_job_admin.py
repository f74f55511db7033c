"""The job admin: read-only pages, actions and buttons through the services, permissions."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runner_jobs import admin as job_admin
from runner_jobs import services
from runner_jobs.admin_dashboard import format_duration
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.services.jobs import ALREADY_RETRIED
from tests.admin.conftest import staff_client
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/runner_jobs/runnerjob/"


def change_url(job: RunnerJob) -> str:
    return f"{CHANGELIST}{job.pk}/change/"


def messages_of(response) -> list[str]:
    return [m.message for m in get_messages(response.wsgi_request)]


def run_action(client: Client, action: str, jobs: list[RunnerJob]):
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(j.pk) for j in jobs], "index": 0},
    )


def snapshot(job: RunnerJob) -> tuple:
    job.refresh_from_db()
    return (job.status, job.version, JobEvent.objects.filter(job=job).count())


# --- who may see and act ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [CHANGELIST, f"{CHANGELIST}dashboard/", "/admin/runner_jobs/jobevent/"],
)
def test_non_staff_and_anonymous_are_sent_to_login(non_staff_client, url):
    for client in (non_staff_client, Client()):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_non_staff_cannot_press_a_button(non_staff_client):
    job = job_in_state("running")
    before = snapshot(job)
    response = non_staff_client.post(f"{CHANGELIST}{job.pk}/cancel/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert snapshot(job) == before


def test_viewer_sees_jobs_but_no_actions_or_buttons(viewer_client):
    job = job_in_state("running")
    changelist = viewer_client.get(CHANGELIST)
    assert changelist.status_code == 200
    assert "cancel_selected" not in changelist.content.decode()
    page = viewer_client.get(change_url(job))
    assert page.status_code == 200
    assert b"rj-cancel-button" not in page.content


def test_viewer_cannot_cancel_or_retry_with_the_buttons(viewer_client):
    running, failed = job_in_state("running"), job_in_state("failed")
    before = snapshot(running), snapshot(failed)
    assert viewer_client.post(f"{CHANGELIST}{running.pk}/cancel/").status_code == 403
    assert viewer_client.post(f"{CHANGELIST}{failed.pk}/retry/").status_code == 403
    assert (snapshot(running), snapshot(failed)) == before
    assert RunnerJob.objects.count() == 2


def test_viewer_cannot_cancel_with_the_action(viewer_client):
    job = job_in_state("running")
    before = snapshot(job)
    response = run_action(viewer_client, "cancel_selected", [job])
    # Django refuses an action the user may not run: the page is shown again, nothing changes.
    assert response.status_code == 200
    assert snapshot(job) == before


def test_buttons_need_the_csrf_token():
    job = job_in_state("running")
    client = staff_client("carol", superuser=True)
    client.handler.enforce_csrf_checks = True
    before = snapshot(job)
    assert client.post(f"{CHANGELIST}{job.pk}/cancel/").status_code == 403
    assert snapshot(job) == before


# --- changelist ---------------------------------------------------------------------------------


def test_changelist_columns_and_filters(admin_client_bob):
    running = job_in_state("running", type="sleep", payload={"seconds": 1})
    job_in_state("completed")
    response = admin_client_bob.get(CHANGELIST)
    body = response.content.decode()
    assert response.status_code == 200
    assert str(running.pk)[:8] in body
    assert 'class="rj-badge rj-running"' in body
    assert 'class="rj-progress"' in body
    assert "1/3" in body  # attempts
    filtered = admin_client_bob.get(CHANGELIST, {"status__exact": "running", "type": "sleep"})
    assert list(filtered.context["cl"].result_list) == [running]
    by_type = admin_client_bob.get(CHANGELIST, {"type": "echo"})
    assert {j.type for j in by_type.context["cl"].result_list} == {"echo"}


def test_changelist_filters_by_workspace_and_created_date(admin_client_bob):
    mine = job_in_state("queued", workspace=WorkspaceFactory(slug="mine"))
    job_in_state("queued", workspace=WorkspaceFactory(slug="other"))
    response = admin_client_bob.get(CHANGELIST, {"workspace__id__exact": mine.workspace_id})
    assert list(response.context["cl"].result_list) == [mine]
    today = admin_client_bob.get(
        CHANGELIST, {"created_at__gte": (mine.created_at - timedelta(days=1)).date().isoformat()}
    )
    assert len(today.context["cl"].result_list) == 2


@pytest.mark.parametrize("term", ["full", "short", "dashed-prefix", "agent"])
def test_search_by_id_prefix_and_agent_task_id(admin_client_bob, term):
    job = job_in_state("queued", agent_task_id="ext-42")
    job_in_state("queued", agent_task_id="ext-43")
    q = {
        "full": str(job.pk),
        "short": str(job.pk)[:8],
        "dashed-prefix": str(job.pk)[:13],
        "agent": "ext-42",
    }[term]
    response = admin_client_bob.get(CHANGELIST, {"q": q})
    assert list(response.context["cl"].result_list) == [job]


def test_search_with_no_match_and_blank_term(admin_client_bob):
    job_in_state("queued")
    no_match = admin_client_bob.get(CHANGELIST, {"q": "nothing-here"})
    assert list(no_match.context["cl"].result_list) == []
    blank = admin_client_bob.get(CHANGELIST, {"q": "  "})
    assert len(blank.context["cl"].result_list) == 1


def test_uuid_prefix_range():
    assert job_admin.uuid_prefix_range("xyz12345") is None
    assert job_admin.uuid_prefix_range("abc") is None  # too short to be an id
    id_range = job_admin.uuid_prefix_range("ABCD-12")
    assert id_range is not None
    low, high = id_range
    assert str(low) == "abcd1200-0000-0000-0000-000000000000"
    assert str(high) == "abcd12ff-ffff-ffff-ffff-ffffffffffff"


# --- the job page -------------------------------------------------------------------------------


def test_job_page_is_read_only(admin_client_bob):
    job = job_in_state("failed")
    response = admin_client_bob.get(change_url(job))
    body = response.content.decode()
    assert response.status_code == 200
    assert 'name="_save"' not in body
    assert "rj-retry-button" in body
    assert "rj-cancel-button" not in body
    assert '<pre class="rj-error">boom</pre>' in body
    before = snapshot(job)
    assert admin_client_bob.post(change_url(job), {"priority": 9}).status_code == 403
    assert snapshot(job) == before


def test_job_page_shows_the_flow_control_fields(admin_client_bob):
    job = job_in_state(
        "queued", concurrency_key="acct-42", concurrency_limit=3, unique_key="nightly-7"
    )
    body = admin_client_bob.get(change_url(job)).content.decode()
    assert "Flow control" in body
    assert "acct-42" in body and "nightly-7" in body


def test_job_page_buttons_follow_the_status(admin_client_bob):
    running = admin_client_bob.get(change_url(job_in_state("running"))).content.decode()
    assert "rj-cancel-button" in running
    assert "rj-retry-button" not in running
    completed = admin_client_bob.get(change_url(job_in_state("completed"))).content.decode()
    assert "rj-cancel-button" not in completed
    assert "rj-retry-button" not in completed


def test_job_page_bounds_the_events_and_links_to_all(admin_client_bob, monkeypatch):
    job = job_in_state("running")
    for pct in range(1, 61):
        services.job_progress_update(job_id=job.pk, progress=pct, actor="worker")
    job.refresh_from_db()
    response = admin_client_bob.get(change_url(job))
    events_formset = next(
        f.formset for f in response.context["inline_admin_formsets"] if f.formset.model is JobEvent
    )
    shown = [form.instance for form in events_formset.forms]
    assert len(shown) == job_admin.LATEST_EVENTS_SHOWN
    latest = JobEvent.objects.filter(job=job).order_by("-timestamp", "-id")
    assert shown == list(latest[: job_admin.LATEST_EVENTS_SHOWN])
    body = response.content.decode()
    assert f"/admin/runner_jobs/jobevent/?job={job.pk}" in body
    assert f"All {job.version} events of this job" in body
    all_events = admin_client_bob.get("/admin/runner_jobs/jobevent/", {"job": str(job.pk)})
    assert all_events.status_code == 200
    assert len(all_events.context["cl"].result_list) == job.version == 63


def test_job_page_shows_steps_and_retry_lineage(admin_client_bob):
    job = job_in_state("running")
    services.step_start(job_id=job.pk, name="fetch", phase="setup", actor="worker")
    job = services.job_fail(job_id=job.pk, error="boom", actor="worker")
    retry = services.job_retry(job_id=job.pk, actor="staff:bob")
    body = admin_client_bob.get(change_url(job)).content.decode()
    assert "fetch" in body
    assert reverse("admin:runner_jobs_runnerjob_change", args=[retry.pk]) in body
    retry_body = admin_client_bob.get(change_url(retry)).content.decode()
    assert reverse("admin:runner_jobs_runnerjob_change", args=[job.pk]) in retry_body


def test_unknown_job_page_redirects_with_a_message(admin_client_bob):
    response = admin_client_bob.get(f"{CHANGELIST}{uuid.uuid4()}/change/")
    assert response.status_code == 302


# --- actions ------------------------------------------------------------------------------------


def test_cancel_action_reports_each_outcome(admin_client_bob):
    running, queued = job_in_state("running"), job_in_state("queued")
    completed, failed = job_in_state("completed"), job_in_state("failed")
    before = snapshot(completed), snapshot(failed)
    response = run_action(admin_client_bob, "cancel_selected", [running, queued, completed, failed])
    assert response.status_code == 302
    assert messages_of(response) == [
        "Cancelled 2 jobs.",
        "Skipped 1 job: A completed job cannot become cancelled.",
        "Skipped 1 job: A failed job cannot become cancelled.",
    ]
    for job in (running, queued):
        job.refresh_from_db()
        assert job.status == "cancelled"
        event = JobEvent.objects.filter(job=job).latest("id")
        assert (event.type, event.actor) == ("job.cancelled", "staff:bob")
    assert (snapshot(completed), snapshot(failed)) == before


def test_retry_action_makes_new_jobs(admin_client_bob):
    failed, cancelled = job_in_state("failed"), job_in_state("cancelled")
    running = job_in_state("running")
    response = run_action(admin_client_bob, "retry_selected", [failed, cancelled, running])
    assert messages_of(response) == [
        "Retried 2 jobs.",
        "Skipped 1 job: Cannot retry a running job.",
    ]
    retries = RunnerJob.objects.filter(retry_of__in=[failed, cancelled])
    assert retries.count() == 2
    assert {r.created_by.username for r in retries} == {"bob"}
    event = JobEvent.objects.filter(job=failed, type="job.retried").get()
    assert event.actor == "staff:bob"
    assert not RunnerJob.objects.filter(retry_of=running).exists()


# --- buttons ------------------------------------------------------------------------------------


def test_cancel_button(admin_client_bob):
    job = job_in_state("running")
    response = admin_client_bob.post(f"{CHANGELIST}{job.pk}/cancel/")
    assert response.status_code == 302
    assert response["Location"] == change_url(job)
    assert messages_of(response) == ["Cancelled 1 job."]
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert JobEvent.objects.filter(job=job).latest("id").actor == "staff:bob"


def test_cancel_button_on_a_terminal_job_changes_nothing(admin_client_bob):
    job = job_in_state("completed")
    before = snapshot(job)
    response = admin_client_bob.post(f"{CHANGELIST}{job.pk}/cancel/")
    assert response["Location"] == change_url(job)
    assert messages_of(response) == ["Skipped 1 job: A completed job cannot become cancelled."]
    assert snapshot(job) == before


def test_retry_button_lands_on_the_new_job(admin_client_bob):
    job = job_in_state("failed")
    response = admin_client_bob.post(f"{CHANGELIST}{job.pk}/retry/")
    new = RunnerJob.objects.get(retry_of=job)
    assert response["Location"] == change_url(new)
    assert messages_of(response) == ["Retried 1 job."]
    assert JobEvent.objects.get(job=job, type="job.retried").actor == "staff:bob"


def test_buttons_refuse_get_and_unknown_jobs(admin_client_bob):
    job = job_in_state("running")
    assert admin_client_bob.get(f"{CHANGELIST}{job.pk}/cancel/").status_code == 405
    assert admin_client_bob.post(f"{CHANGELIST}{uuid.uuid4()}/cancel/").status_code == 404
    job.refresh_from_db()
    assert job.status == "running"


# --- other pages --------------------------------------------------------------------------------


def test_step_and_event_lists(admin_client_bob):
    job = job_in_state("running")
    services.step_start(job_id=job.pk, name="fetch", phase="setup", actor="worker")
    assert admin_client_bob.get("/admin/runner_jobs/jobstep/").status_code == 200
    events = admin_client_bob.get(
        "/admin/runner_jobs/jobevent/", {"job": str(job.pk), "type": "job.started"}
    )
    assert [e.type for e in events.context["cl"].result_list] == ["job.started"]
    assert str(job.pk)[:8] in events.content.decode()
    assert "?job=" in events.content.decode()  # the type filter, offered for one job's events
    unfiltered = admin_client_bob.get("/admin/runner_jobs/jobevent/")
    assert "type=job.started" not in unfiltered.content.decode()


def test_admin_index_links_the_dashboard(admin_client_bob):
    dashboard = "/admin/runner_jobs/runnerjob/dashboard/"
    assert dashboard in admin_client_bob.get("/admin/").content.decode()
    assert dashboard not in staff_client("nemo").get("/admin/").content.decode()


def test_format_duration():
    assert format_duration(None) == "-"
    assert format_duration(timedelta(seconds=5)) == "5s"
    assert format_duration(timedelta(minutes=2, seconds=3)) == "2m 3s"
    assert format_duration(timedelta(hours=3, minutes=4, seconds=5)) == "3h 4m"
    assert format_duration(timedelta(seconds=-3)) == "0s"


def test_a_job_is_retried_once_from_the_admin(admin_client_bob):
    job = job_in_state("failed")
    admin_client_bob.post(f"{CHANGELIST}{job.pk}/retry/")
    assert "rj-retry-button" not in admin_client_bob.get(change_url(job)).content.decode()
    before = snapshot(job)
    response = admin_client_bob.post(f"{CHANGELIST}{job.pk}/retry/")
    assert response["Location"] == change_url(job)
    assert messages_of(response) == [f"Skipped 1 job: {ALREADY_RETRIED}"]
    admin_client_bob.get(CHANGELIST)  # shows (and so clears) the pending messages
    again = run_action(admin_client_bob, "retry_selected", [job])
    assert messages_of(again) == [f"Skipped 1 job: {ALREADY_RETRIED}"]
    assert RunnerJob.objects.filter(retry_of=job).count() == 1
    assert snapshot(job) == before


def test_retried_filter(admin_client_bob):
    retried, pending_look = job_in_state("failed"), job_in_state("failed")
    new = services.job_retry(job_id=retried.pk, actor="staff:bob")
    not_retried = admin_client_bob.get(CHANGELIST, {"status__exact": "failed", "retried": "no"})
    assert list(not_retried.context["cl"].result_list) == [pending_look]
    was_retried = admin_client_bob.get(CHANGELIST, {"retried": "yes"})
    assert list(was_retried.context["cl"].result_list) == [retried]
    assert new not in was_retried.context["cl"].result_list


@pytest.mark.parametrize(
    ("flow", "fields"),
    [
        ("key", {"concurrency_key": "acct-1"}),
        ("unique", {"unique_key": "u-1"}),
        ("ttl", {"ttl_seconds": 60}),
        ("timeout", {"timeout_seconds": 60}),
        ("run_at", {"run_at": timezone.now() + timedelta(hours=1)}),
    ],
)
def test_flow_control_filters(admin_client_bob, flow, fields):
    plain, flowed = job_in_state("queued"), job_in_state("queued", **fields)
    found = admin_client_bob.get(CHANGELIST, {"flow": flow}).context["cl"].result_list
    assert list(found) == [flowed] and plain not in found


def test_concurrency_key_filter_and_the_job_page_shows_the_flow_fields(admin_client_bob):
    keyed = job_in_state("queued", concurrency_key="acct-1", ttl_seconds=60, timeout_seconds=9)
    job_in_state("queued", concurrency_key="acct-2")
    found = admin_client_bob.get(CHANGELIST, {"concurrency_key": "acct-1"}).context["cl"]
    assert list(found.result_list) == [keyed]
    page = admin_client_bob.get(f"/admin/runner_jobs/runnerjob/{keyed.pk}/change/")
    assert page.status_code == 200
    for label in ("Ttl seconds", "Expires at", "Timeout seconds", "acct-1"):
        assert label in page.content.decode()


def test_the_job_page_shows_why_it_is_not_running(admin_client_bob):
    holder = job_in_state("running", concurrency_key="acct-1")
    waiting = job_in_state("queued", workspace=holder.workspace, concurrency_key="acct-1")
    page = admin_client_bob.get(f"/admin/runner_jobs/runnerjob/{waiting.pk}/change/")
    assert page.context["explanation"].reasons[0]["code"] == "concurrency_limit"
    content = page.content.decode()
    assert "Why it is not running" in content and "concurrency_limit" in content
    assert f"../../{holder.pk}/change/" in content
    running = admin_client_bob.get(f"/admin/runner_jobs/runnerjob/{holder.pk}/change/")
    assert "rj-explain" not in running.content.decode()
