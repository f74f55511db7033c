"""POST cancel and retry: transitions, roles, tenant isolation, If-Match."""

import pytest

from runner_jobs.models import JobEvent, RunnerJob
from tests.factories import job_in_state

URL = "/api/v1/runner-jobs/"
pytestmark = pytest.mark.django_db


def snapshot(job: RunnerJob) -> tuple:
    job.refresh_from_db()
    return (job.status, job.version, JobEvent.objects.filter(job=job).count())


class TestCancel:
    @pytest.mark.parametrize("status", ["pending", "queued", "running"])
    def test_cancels_an_active_job(self, client, workspace, status):
        job = job_in_state(status, workspace=workspace)
        response = client.post(f"{URL}{job.id}/cancel/")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "cancelled"
        assert body["completed_at"] is not None
        job.refresh_from_db()
        assert response["ETag"] == f'"{job.version}"' == f'"{body["version"]}"'
        event = JobEvent.objects.filter(job=job).last()
        assert (event.type, event.actor, event.payload) == (
            "job.cancelled",
            "user:alice",
            {"from": status},
        )

    @pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
    def test_terminal_job_is_a_409_and_unchanged(self, client, workspace, status):
        job = job_in_state(status, workspace=workspace)
        before = snapshot(job)
        response = client.post(f"{URL}{job.id}/cancel/")
        assert response.status_code == 409
        assert response.json()["code"] == "invalid_transition"
        assert snapshot(job) == before

    def test_viewer_is_a_403_and_unchanged(self, viewer_client, workspace):
        job = job_in_state("queued", workspace=workspace)
        before = snapshot(job)
        response = viewer_client.post(f"{URL}{job.id}/cancel/")
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"
        assert snapshot(job) == before

    def test_another_workspaces_job_is_a_404_and_unchanged(self, client, other_workspace):
        job = job_in_state("queued", workspace=other_workspace)
        before = snapshot(job)
        response = client.post(f"{URL}{job.id}/cancel/")
        assert response.status_code == 404
        assert response.json() == {"detail": "No such job.", "code": "not_found"}
        assert snapshot(job) == before

    def test_if_match_current_version_cancels(self, client, workspace):
        job = job_in_state("queued", workspace=workspace)
        response = client.post(f"{URL}{job.id}/cancel/", headers={"If-Match": f'"{job.version}"'})
        assert response.status_code == 200

    def test_weak_tag_and_star_also_match(self, client, workspace):
        job = job_in_state("queued", workspace=workspace)
        response = client.post(f"{URL}{job.id}/cancel/", headers={"If-Match": f'W/"{job.version}"'})
        assert response.status_code == 200
        other = job_in_state("queued", workspace=workspace)
        assert client.post(f"{URL}{other.id}/cancel/", headers={"If-Match": "*"}).status_code == 200

    def test_stale_if_match_is_a_412_and_unchanged(self, client, workspace):
        job = job_in_state("queued", workspace=workspace)
        etag = client.get(f"{URL}{job.id}/")["ETag"]
        from runner_jobs import services

        services.event_append(job_id=job.pk, type="note.added", actor="system")
        before = snapshot(job)
        response = client.post(f"{URL}{job.id}/cancel/", headers={"If-Match": etag})
        assert response.status_code == 412
        assert response.json()["code"] == "precondition_failed"
        assert snapshot(job) == before

    @pytest.mark.parametrize("header", ["3", '"abc"', '"1", "2"', ""])
    def test_malformed_if_match_is_a_400(self, client, workspace, header):
        job = job_in_state("queued", workspace=workspace)
        before = snapshot(job)
        response = client.post(f"{URL}{job.id}/cancel/", headers={"If-Match": header})
        assert response.status_code == 400
        assert "If-Match" in response.json()
        assert snapshot(job) == before


class TestRetry:
    @pytest.mark.parametrize("status", ["failed", "cancelled"])
    def test_retry_makes_a_new_job(self, client, workspace, status):
        old = job_in_state(status, workspace=workspace, type="echo", payload={"x": 1}, priority=8)
        response = client.post(f"{URL}{old.id}/retry/")
        assert response.status_code == 201
        body = response.json()
        new = RunnerJob.objects.get(pk=body["id"])
        assert new.pk != old.pk
        assert (body["retry_of"], body["type"], body["payload"], body["priority"]) == (
            str(old.id),
            "echo",
            {"x": 1},
            8,
        )
        assert (body["status"], body["created_by"]) == ("queued", "alice")
        assert response["ETag"] == '"2"'
        assert response["Location"] == f"http://testserver/api/v1/runner-jobs/{new.id}/"
        retried = JobEvent.objects.filter(job=old).last()
        assert (retried.type, retried.payload) == ("job.retried", {"retry_job_id": str(new.id)})

    @pytest.mark.parametrize("status", ["pending", "queued", "running", "completed"])
    def test_not_failed_or_cancelled_is_a_409(self, client, workspace, status):
        job = job_in_state(status, workspace=workspace)
        before = snapshot(job)
        response = client.post(f"{URL}{job.id}/retry/")
        assert response.status_code == 409
        assert response.json()["code"] == "invalid_transition"
        assert snapshot(job) == before
        assert RunnerJob.objects.count() == 1

    def test_viewer_is_a_403(self, viewer_client, workspace):
        job = job_in_state("failed", workspace=workspace)
        response = viewer_client.post(f"{URL}{job.id}/retry/")
        assert response.status_code == 403
        assert RunnerJob.objects.count() == 1

    def test_another_workspaces_job_is_a_404(self, client, other_workspace):
        job = job_in_state("failed", workspace=other_workspace)
        response = client.post(f"{URL}{job.id}/retry/")
        assert response.status_code == 404
        assert RunnerJob.objects.count() == 1

    def test_stale_if_match_is_a_412(self, client, workspace):
        job = job_in_state("failed", workspace=workspace)
        response = client.post(
            f"{URL}{job.id}/retry/", headers={"If-Match": f'"{job.version - 1}"'}
        )
        assert response.status_code == 412
        assert RunnerJob.objects.count() == 1

    def test_if_match_current_version_retries(self, client, workspace):
        job = job_in_state("failed", workspace=workspace)
        response = client.post(f"{URL}{job.id}/retry/", headers={"If-Match": f'"{job.version}"'})
        assert response.status_code == 201

    def test_unauthenticated_is_a_401(self, workspace):
        from rest_framework.test import APIClient

        job = job_in_state("failed", workspace=workspace)
        assert APIClient().post(f"{URL}{job.id}/retry/").status_code == 401


def test_session_auth_works_for_the_browsable_api(user, member, workspace):
    from rest_framework.test import APIClient

    job = job_in_state("queued", workspace=workspace)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(f"{URL}{job.id}/").status_code == 200
    page = client.get(URL, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert b"Runner Job" in page.content
    # Session writes need the CSRF token, as in any Django form.
    assert client.post(f"{URL}{job.id}/cancel/").status_code == 403
