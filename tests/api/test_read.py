"""GET list (filters, pagination), detail and events; tenant isolation for every read."""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from tests.factories import job_in_state

URL = "/api/v1/runner-jobs/"
pytestmark = pytest.mark.django_db


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [job["id"] for job in response.json()["results"]]


def test_list_is_newest_first_and_only_your_workspaces(client, workspace, other_workspace):
    older = job_in_state("pending", workspace=workspace)
    newer = job_in_state("queued", workspace=workspace)
    job_in_state("pending", workspace=other_workspace)
    response = client.get(URL)
    assert response.json()["next"] is None
    assert response.json()["previous"] is None
    assert ids(response) == [str(newer.id), str(older.id)]


def test_list_pages_with_a_cursor(client, workspace):
    jobs = [job_in_state("pending", workspace=workspace) for _ in range(5)]
    expected = [str(job.id) for job in reversed(jobs)]
    first = client.get(URL, {"page_size": 2})
    seen = ids(first)
    next_url = first.json()["next"]
    while next_url:
        page = client.get(next_url)
        seen += ids(page)
        next_url = page.json()["next"]
    assert seen == expected


def test_page_size_defaults_to_50_and_is_capped_at_200(client, workspace):
    for _ in range(201):
        job_in_state("pending", workspace=workspace)
    assert len(ids(client.get(URL))) == 50
    assert len(ids(client.get(URL, {"page_size": 500}))) == 200
    assert len(ids(client.get(URL, {"page_size": 3}))) == 3


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!",
        base64.b64encode(b"p=garbage").decode(),
        base64.b64encode(b"p=2020-13-45T00:00:00").decode(),
        base64.b64encode(b"o=x").decode(),
    ],
)
def test_bad_cursor_is_a_400(client, cursor):
    response = client.get(URL, {"cursor": cursor})
    assert response.status_code == 400
    assert response.json() == {"cursor": ["Invalid cursor."]}


class TestFilters:
    @pytest.fixture
    def jobs(self, workspace):
        return {
            "pending": job_in_state("pending", workspace=workspace, type="echo"),
            "queued": job_in_state("queued", workspace=workspace, type="sleep"),
            "running": job_in_state("running", workspace=workspace, type="echo"),
            "failed": job_in_state("failed", workspace=workspace, type="fail", agent_task_id="T-9"),
        }

    def test_status_takes_a_comma_separated_list(self, client, jobs):
        response = client.get(URL, {"status": "queued,running"})
        assert set(ids(response)) == {str(jobs["queued"].id), str(jobs["running"].id)}
        assert ids(client.get(URL, {"status": "failed"})) == [str(jobs["failed"].id)]

    def test_unknown_status_is_a_400(self, client, jobs):
        response = client.get(URL, {"status": "queued,bogus"})
        assert response.status_code == 400
        assert "status" in response.json()

    def test_type(self, client, jobs):
        assert set(ids(client.get(URL, {"type": "echo"}))) == {
            str(jobs["pending"].id),
            str(jobs["running"].id),
        }

    def test_agent_task_id(self, client, jobs):
        assert ids(client.get(URL, {"agent_task_id": "T-9"})) == [str(jobs["failed"].id)]

    def test_workspace(self, client, jobs, member, other_workspace):
        from tests.factories import MembershipFactory

        MembershipFactory(user=member.user, workspace=other_workspace, role="viewer")
        theirs = job_in_state("pending", workspace=other_workspace)
        assert ids(client.get(URL, {"workspace": "globex"})) == [str(theirs.id)]
        assert len(ids(client.get(URL, {"workspace": "acme"}))) == 4
        assert len(ids(client.get(URL))) == 5

    def test_workspace_you_are_not_in_lists_nothing(self, client, jobs, other_workspace):
        job_in_state("pending", workspace=other_workspace)
        assert ids(client.get(URL, {"workspace": "globex"})) == []

    def test_created_after_and_before(self, client, jobs):
        old = jobs["pending"]
        RunnerJob.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
        cut = (timezone.now() - timedelta(days=1)).isoformat()
        assert ids(client.get(URL, {"created_before": cut})) == [str(old.id)]
        assert str(old.id) not in ids(client.get(URL, {"created_after": cut}))
        assert len(ids(client.get(URL, {"created_after": cut}))) == 3

    def test_bad_date_is_a_400(self, client):
        response = client.get(URL, {"created_after": "yesterday"})
        assert response.status_code == 400
        assert "created_after" in response.json()

    @pytest.mark.parametrize(
        ("name", "value"),
        [("type", "t" * 65), ("agent_task_id", "a" * 256), ("workspace", "w" * 65)],
    )
    def test_a_value_longer_than_its_column_is_a_400(self, client, name, value):
        response = client.get(URL, {name: value})
        assert response.status_code == 400
        assert name in response.json()

    def test_retry_of(self, client, jobs):
        retry = services.job_retry(job_id=jobs["failed"].pk, actor="user:alice")
        assert ids(client.get(URL, {"retry_of": str(jobs["failed"].id)})) == [str(retry.id)]

    def test_bad_retry_of_is_a_400(self, client):
        response = client.get(URL, {"retry_of": "nope"})
        assert response.status_code == 400
        assert "retry_of" in response.json()


class TestDetail:
    def test_job_with_steps_by_ordinal_and_events(self, client, workspace):
        job = job_in_state("running", workspace=workspace)
        first = services.step_start(job_id=job.pk, name="fetch", phase="setup", actor="worker")
        services.step_finish(job_id=job.pk, step_id=first.pk, status="completed", actor="worker")
        services.step_start(job_id=job.pk, name="work", phase="execution", actor="worker")
        response = client.get(f"{URL}{job.id}/")
        assert response.status_code == 200
        body = response.json()
        job.refresh_from_db()
        assert response["ETag"] == f'"{job.version}"'
        assert [(s["ordinal"], s["name"], s["status"]) for s in body["steps"]] == [
            (1, "fetch", "completed"),
            (2, "work", "running"),
        ]
        assert [e["type"] for e in body["events"]] == [
            "job.created",
            "job.queued",
            "job.started",
            "step.started",
            "step.completed",
            "step.started",
        ]
        assert set(body["events"][3]) == {
            "id",
            "job",
            "step",
            "type",
            "timestamp",
            "actor",
            "payload",
        }
        assert body["events"][3]["step"] == first.pk

    def test_only_the_latest_100_events_oldest_first(self, client, workspace):
        job = job_in_state("running", workspace=workspace)
        for pct in range(1, 106):
            services.job_progress_update(job_id=job.pk, progress=pct % 101, actor="worker")
        events = client.get(f"{URL}{job.id}/").json()["events"]
        latest = list(JobEvent.objects.filter(job=job).order_by("-id")[:100])
        assert [e["id"] for e in events] == [e.id for e in reversed(latest)]

    def test_another_workspaces_job_is_a_404(self, client, other_workspace):
        job = job_in_state("pending", workspace=other_workspace)
        response = client.get(f"{URL}{job.id}/")
        assert response.status_code == 404
        assert response.json() == {
            "detail": "No such job.",
            "code": "not_found",
        }

    @pytest.mark.parametrize("job_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
    def test_unknown_or_malformed_id_is_a_json_404(self, client, job_id):
        response = client.get(f"{URL}{job_id}/")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"

    def test_list_filters_do_not_hide_a_job_from_its_own_url(self, client, workspace):
        job = job_in_state("pending", workspace=workspace)
        assert client.get(f"{URL}{job.id}/", {"status": "failed"}).status_code == 200

    def test_viewer_can_read(self, viewer_client, workspace):
        job = job_in_state("pending", workspace=workspace)
        assert viewer_client.get(f"{URL}{job.id}/").status_code == 200
        assert ids(viewer_client.get(URL)) == [str(job.id)]


class TestEvents:
    @pytest.fixture
    def job(self, workspace):
        job = job_in_state("running", workspace=workspace)
        for pct in (10, 20, 30):
            services.job_progress_update(job_id=job.pk, progress=pct, actor="worker")
        return job

    def url(self, job) -> str:
        return f"{URL}{job.id}/events/"

    def test_events_oldest_first(self, client, job):
        response = client.get(self.url(job))
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        assert [e["type"] for e in body["results"]] == [
            "job.created",
            "job.queued",
            "job.started",
            "job.progress",
            "job.progress",
            "job.progress",
        ]
        assert [e["payload"].get("progress") for e in body["results"][3:]] == [10, 20, 30]

    def test_after_an_event_id(self, client, job):
        events = list(JobEvent.objects.filter(job=job).order_by("id"))
        response = client.get(self.url(job), {"after": events[2].id})
        assert [e["id"] for e in response.json()["results"]] == [e.id for e in events[3:]]

    def test_type(self, client, job):
        response = client.get(self.url(job), {"type": "job.started"})
        assert [e["type"] for e in response.json()["results"]] == ["job.started"]

    @pytest.mark.parametrize("after", ["x", "1.5", "-1", str(2**63)])
    def test_bad_after_is_a_400(self, client, job, after):
        response = client.get(self.url(job), {"after": after})
        assert response.status_code == 400
        assert "after" in response.json()

    def test_paginated(self, client, job):
        first = client.get(self.url(job), {"page_size": 4}).json()
        second = client.get(first["next"]).json()
        assert len(first["results"]) == 4
        assert len(second["results"]) == 2
        assert first["results"][-1]["id"] < second["results"][0]["id"]
        assert second["next"] is None

    def test_another_workspaces_job_is_a_404(self, client, other_workspace):
        job = job_in_state("pending", workspace=other_workspace)
        response = client.get(self.url(job))
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"

    def test_unauthenticated_is_a_401(self, job):
        from rest_framework.test import APIClient

        assert APIClient().get(self.url(job)).status_code == 401


def test_unrouted_api_url_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_unrouted_page_outside_the_api_keeps_django_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_offset_beyond_what_postgres_takes_still_filters(client, workspace):
    job = job_in_state("pending", workspace=workspace)
    assert ids(client.get(URL, {"created_before": "2727-06-10T13:38:16-23:47"})) == [str(job.id)]


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+05:00"])
def test_dates_utc_cannot_hold_are_a_400(client, value):
    response = client.get(URL, {"created_after": value})
    assert response.status_code == 400
    assert "created_after" in response.json()


@pytest.mark.parametrize("page_size", ["0", "-3", "x", "null"])
def test_bad_page_size_is_a_400(client, page_size):
    response = client.get(URL, {"page_size": page_size})
    assert response.status_code == 400
    assert response.json() == {"page_size": ["Must be a whole number of at least 1."]}


def test_empty_filter_values_filter_nothing(client, workspace):
    job = job_in_state("pending", workspace=workspace)
    params = {"status": "", "retry_of": "", "page_size": "", "cursor": "", "created_after": ""}
    assert ids(client.get(URL, params)) == [str(job.id)]
