"""Each endpoint runs a fixed number of queries, however many jobs, steps or events there are."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runner_jobs import services
from tests.factories import job_in_state

URL = "/api/v1/runner-jobs/"
pytestmark = pytest.mark.django_db


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_list_queries_do_not_grow_with_the_page(client, workspace):
    job_in_state("pending", workspace=workspace)
    one = queries(client, URL)
    for _ in range(20):
        job_in_state("failed", workspace=workspace)
    assert queries(client, URL) == one
    assert one <= 4


def test_detail_and_events_queries_do_not_grow_with_steps_and_events(client, workspace):
    job = job_in_state("running", workspace=workspace)
    small = (queries(client, f"{URL}{job.id}/"), queries(client, f"{URL}{job.id}/events/"))
    for n in range(5):
        step = services.step_start(job_id=job.pk, name=f"s{n}", phase="execution", actor="w")
        services.step_finish(job_id=job.pk, step_id=step.pk, status="completed", actor="w")
    large = (queries(client, f"{URL}{job.id}/"), queries(client, f"{URL}{job.id}/events/"))
    assert large == small
    assert small[0] <= 5 and small[1] <= 4


@pytest.mark.django_db(transaction=True)
def test_create_queries_with_its_after_commit_dispatch(client, workspace):
    """Token, membership with its workspace, the create (job, ``job.created`` and
    ``job.queued`` in one statement, no BEGIN/COMMIT: it is its own transaction), the
    workspace's webhook endpoints once for both events; no knox sweep of expired tokens; the
    message is published after commit with no further statement."""
    body = {"workspace": "acme", "type": "echo", "payload": {"n": 1}}
    with CaptureQueriesContext(connection) as captured:
        assert client.post(URL, body, format="json").status_code == 201
    sql = [q["sql"] for q in captured.captured_queries]
    assert len(sql) == 4, "\n".join(q[:120] for q in sql)
    assert sum(q.startswith("WITH job AS (INSERT") for q in sql) == 1
