"""The admin's side of issue 16: "select all" actions start bulk operations and show their
progress; tag and metadata filters, search and columns; the "Retry with changes" page."""

import re

import pytest
from django.contrib.messages import get_messages

from runner_jobs import services
from runner_jobs.events import EventType
from runner_jobs.models import JobEvent, Operation, RunnerJob
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/runner_jobs/runnerjob/"
OPERATIONS = "/admin/runner_jobs/operation/"


def messages_of(response) -> list[str]:
    return [str(m.message) for m in get_messages(response.wsgi_request)]


def select_all(client, action, query=""):
    """The changelist's "select all N jobs" (across pages) for the jobs the query filters."""
    return client.post(
        f"{CHANGELIST}{query}",
        {"action": action, "select_across": "1", "index": 0, "_selected_action": ["x"]},
    )


def test_select_all_starts_an_operation_and_links_to_its_page(admin_client_bob):
    workspace = WorkspaceFactory()
    jobs = [job_in_state("queued", workspace=workspace, tags=["nightly"]) for _ in range(3)]
    untouched = job_in_state("queued", workspace=workspace)
    response = select_all(admin_client_bob, "cancel_selected", "?tag=nightly")
    assert response.status_code == 302
    operation = Operation.objects.get()
    (message,) = messages_of(response)
    assert f'href="{OPERATIONS}{operation.pk}/change/"' in message
    assert "cancel 3 jobs" in message
    assert (operation.workspace, operation.matched, operation.actor) == (workspace, 3, "staff:bob")
    assert operation.filter == {"admin": "tag=nightly"}
    # No job changes in the request: the task does it (here, run in process).
    assert RunnerJob.objects.filter(status="cancelled").count() == 0
    services.operation_run(operation_id=operation.pk)
    for job in jobs:
        job.refresh_from_db()
        assert job.status == "cancelled"
        event = JobEvent.objects.get(job=job, type=EventType.JOB_CANCELLED)
        assert (event.actor, event.payload["operation"]) == ("staff:bob", str(operation.pk))
    untouched.refresh_from_db()
    assert untouched.status == "queued"


def test_select_all_across_workspaces_makes_one_operation_without_workspace(admin_client_bob):
    for _ in range(2):
        job_in_state("failed", workspace=WorkspaceFactory())
    select_all(admin_client_bob, "retry_selected", "?status__exact=failed")
    operation = Operation.objects.get()
    assert (operation.workspace, operation.action, operation.matched) == (None, "retry", 2)
    services.operation_run(operation_id=operation.pk)
    assert RunnerJob.objects.filter(retry_of__isnull=False).count() == 2


def test_the_operation_page_shows_progress_and_cancels(admin_client_bob, monkeypatch):
    monkeypatch.setattr("runner_jobs.services.operations.OPERATION_BATCH_SIZE", 1)
    workspace = WorkspaceFactory()
    for _ in range(3):
        job_in_state("queued", workspace=workspace)
    operation = services.operation_create(
        workspace=workspace, action="cancel", filters={}, actor="user:x"
    )
    services.operation_run(operation_id=operation.pk, seconds=0)
    page = admin_client_bob.get(f"{OPERATIONS}{operation.pk}/change/")
    content = page.content.decode()
    assert page.status_code == 200
    assert "1 of 3 jobs" in content
    assert 'http-equiv="refresh"' in content  # follows the counts while it runs
    assert "rj-cancel-operation-button" in content
    response = admin_client_bob.post(f"{OPERATIONS}{operation.pk}/cancel/")
    assert response.status_code == 302
    assert Operation.objects.get().status == "cancelled"
    again = admin_client_bob.post(f"{OPERATIONS}{operation.pk}/cancel/")
    assert messages_of(again)[-1] == "Only a running operation can be cancelled."
    ended = admin_client_bob.get(f"{OPERATIONS}{operation.pk}/change/").content.decode()
    assert 'http-equiv="refresh"' not in ended
    assert "rj-cancel-operation-button" not in ended
    assert admin_client_bob.get(OPERATIONS).status_code == 200
    assert admin_client_bob.get(f"{OPERATIONS}{operation.pk}/cancel/").status_code == 405


def test_staff_without_change_permission_cannot_cancel_an_operation(viewer_client):
    workspace = WorkspaceFactory()
    job_in_state("queued", workspace=workspace)
    operation = services.operation_create(
        workspace=workspace, action="cancel", filters={}, actor="user:x"
    )
    assert viewer_client.post(f"{OPERATIONS}{operation.pk}/cancel/").status_code == 403
    assert Operation.objects.get().status == "running"


def test_ticked_rows_of_one_page_are_still_acted_on_at_once(admin_client_bob):
    job = job_in_state("queued")
    response = admin_client_bob.post(
        CHANGELIST, {"action": "cancel_selected", "_selected_action": [str(job.pk)], "index": 0}
    )
    assert messages_of(response) == ["Cancelled 1 job."]
    assert not Operation.objects.exists()


class TestTagsAndMetadata:
    @pytest.fixture
    def jobs(self):
        return {
            "red": job_in_state(tags=["red", "env:prod"], metadata={"customer": "42"}),
            "blue": job_in_state(tags=["blue"], metadata={"customer": "7"}),
        }

    def listed(self, client, query) -> set[str]:
        response = client.get(f"{CHANGELIST}{query}")
        assert response.status_code == 200
        return set(
            re.findall(
                r"/admin/runner_jobs/runnerjob/([0-9a-f-]{36})/change/", response.content.decode()
            )
        )

    def test_filters(self, admin_client_bob, jobs):
        assert self.listed(admin_client_bob, "?tag=red") == {str(jobs["red"].pk)}
        assert self.listed(admin_client_bob, "?metadata=customer%3D7") == {str(jobs["blue"].pk)}

    def test_search(self, admin_client_bob, jobs):
        assert self.listed(admin_client_bob, "?q=tag%3Aenv%3Aprod") == {str(jobs["red"].pk)}
        assert self.listed(admin_client_bob, "?q=customer%3D42") == {str(jobs["red"].pk)}

    def test_bad_filter_values_show_an_error_and_no_jobs(self, admin_client_bob, jobs):
        for query in ("?tag=Red", "?metadata=customer"):
            response = admin_client_bob.get(f"{CHANGELIST}{query}")
            assert response.status_code == 200
            assert messages_of(response)
            assert self.listed(admin_client_bob, query) == set()

    def test_columns_and_page(self, admin_client_bob, jobs):
        content = admin_client_bob.get(f"{CHANGELIST}?tag=red").content.decode()
        assert '<span class="rj-tag">env:prod</span>' in content
        assert 'placeholder="customer=42"' in content
        page = admin_client_bob.get(f"{CHANGELIST}{jobs['red'].pk}/change/").content.decode()
        assert "env:prod" in page
        assert "customer" in page


class TestRetryWithChanges:
    def url(self, job):
        return f"{CHANGELIST}{job.pk}/retry-with-changes/"

    def test_the_job_page_links_to_the_form_which_shows_the_current_values(self, admin_client_bob):
        job = job_in_state("failed", payload={"n": 1}, tags=["a"], metadata={"k": "v"})
        page = admin_client_bob.get(f"{CHANGELIST}{job.pk}/change/").content.decode()
        assert self.url(job) in page
        form = admin_client_bob.get(self.url(job))
        assert form.status_code == 200
        assert form.context["form"].initial == {
            "payload": {"n": 1},
            "priority": 5,
            "tags": "a",
            "metadata": {"k": "v"},
        }

    def test_submitting_retries_with_the_changes(self, admin_client_bob):
        job = job_in_state("failed", payload={"n": 1}, tags=["a"])
        response = admin_client_bob.post(
            self.url(job),
            {"payload": '{"n": 2}', "priority": "8", "tags": "a,b", "metadata": "{}"},
        )
        new = RunnerJob.objects.get(retry_of=job)
        assert response.status_code == 302
        assert response["Location"] == f"{CHANGELIST}{new.pk}/change/"
        assert (new.payload, new.priority, new.tags) == ({"n": 2}, 8, ["a", "b"])
        created = JobEvent.objects.get(job=new, type=EventType.JOB_CREATED)
        assert (created.actor, created.payload["changed"]) == (
            "staff:bob",
            ["payload", "priority", "tags"],
        )

    @pytest.mark.parametrize(
        ("data", "field"),
        [
            ({"tags": "Capital"}, "tags"),
            ({"tags": "a, b"}, "tags"),
            ({"metadata": '{"k": "' + "v" * 257 + '"}'}, "metadata"),
            ({"payload": "[1, 2]"}, "payload"),
            ({"payload": "not json"}, "payload"),
            ({"priority": "10"}, "priority"),
        ],
    )
    def test_bad_values_show_on_the_form_and_change_nothing(self, admin_client_bob, data, field):
        job = job_in_state("failed")
        body = {"payload": "{}", "priority": "5", "tags": "", "metadata": "{}", **data}
        response = admin_client_bob.post(self.url(job), body)
        assert response.status_code == 200
        assert response.context["form"].errors[field]
        assert not RunnerJob.objects.filter(retry_of=job).exists()

    def test_a_job_that_cannot_be_retried_shows_why(self, admin_client_bob):
        job = job_in_state("completed")
        page = admin_client_bob.get(self.url(job)).content.decode()
        assert "Only a failed or cancelled job" in page
        response = admin_client_bob.post(
            self.url(job), {"payload": "{}", "priority": "5", "tags": "", "metadata": "{}"}
        )
        assert response.context["form"].non_field_errors() == ["Cannot retry a completed job."]

    def test_staff_without_change_permission_get_403(self, viewer_client):
        job = job_in_state("failed")
        assert viewer_client.get(self.url(job)).status_code == 403
        assert (
            viewer_client.post(self.url(job), {"payload": "{}", "priority": "1"}).status_code == 403
        )
        assert not RunnerJob.objects.filter(retry_of=job).exists()
