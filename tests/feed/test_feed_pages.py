"""``GET /api/v1/events/``: the workspace feed as pages."""

import pytest
from django.db import connection
from rest_framework.test import APIClient

from job_events.feed import FeedPosition, FeedQuery, workspace_events_after
from runner_jobs import services
from runner_jobs.events import event_type_matches
from runner_jobs.models import FEED_XID, JobEvent
from tests.execution.conftest import wait_for
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory, job_in_state

URL = "/api/v1/events/"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def acme(member):
    return member.workspace


@pytest.fixture
def api(user, member):
    client = APIClient()
    client.force_authenticate(user)
    return client


def settle() -> None:
    """Wait until every event written so far is final (below the feed's horizon). PostgreSQL is
    shared: another session's open transaction holds the horizon back for a moment."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(xid) FROM job_events_jobevent")
        newest = cursor.fetchone()[0]
    wait_for(lambda: newest is None or horizon() > int(newest), timeout=30)


def horizon() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())")
        return int(cursor.fetchone()[0])


def feed_order(workspace) -> list[int]:
    """The table's own answer: the workspace's events in (xid, id) order."""
    return list(
        JobEvent.objects.filter(job__workspace=workspace)
        .order_by(FEED_XID, "id")
        .values_list("id", flat=True)
    )


def read_all(api, params: dict, page_size: int = 3) -> list[dict]:
    settle()
    events: list[dict] = []
    after = params.pop("after", "0")
    while True:
        response = api.get(URL, {**params, "after": after, "page_size": page_size})
        assert response.status_code == 200, response.json()
        body = response.json()
        events += body["results"]
        if not body["results"]:
            assert body["after"] == after
            return events
        assert body["after"] == body["results"][-1]["cursor"]
        assert f"after={body['after']}" in body["next"]
        after = body["after"]


def test_pages_walk_every_event_of_the_workspace_once_in_feed_order(api, acme):
    jobs = [job_in_state("running", workspace=acme) for _ in range(3)]
    services.event_append(job_id=jobs[0].pk, type="agent.note", actor="x")
    job_in_state("completed", workspace=WorkspaceFactory(slug="other"))
    events = read_all(api, {"workspace": "acme"})
    assert [e["id"] for e in events] == feed_order(acme)
    assert len(events) == 3 * 3 + 1
    first = events[0]
    assert set(first) == {
        "id",
        "job",
        "step",
        "type",
        "timestamp",
        "actor",
        "payload",
        "job_type",
        "cursor",
    }
    assert first["job_type"] == "echo"
    xid, event_id = first["cursor"].split(".")
    assert int(event_id) == first["id"]
    assert int(xid) == JobEvent.objects.get(pk=first["id"]).xid


def test_type_and_job_type_filters(api, acme):
    job = job_in_state("running", workspace=acme)
    sleeper = job_in_state("queued", workspace=acme, type="sleep", payload={"seconds": 1})
    services.event_append(job_id=job.pk, type="agent.note", actor="x")
    started = read_all(api, {"workspace": "acme", "type": ["job.started", "agent.*"]})
    assert [(e["job"], e["type"]) for e in started] == [
        (str(job.pk), "job.started"),
        (str(job.pk), "agent.note"),
    ]
    sleeps = read_all(api, {"workspace": "acme", "job_type": "sleep", "type": "job.*"})
    assert {e["job"] for e in sleeps} == {str(sleeper.pk)}
    assert [e["type"] for e in sleeps] == ["job.created", "job.queued"]
    assert len(read_all(api, {"workspace": "acme", "type": "*"})) == 3 + 2 + 1


def test_after_takes_a_cursor_a_bare_event_id_or_zero(api, acme):
    job_in_state("completed", workspace=acme)
    order = feed_order(acme)
    settle()
    first = api.get(URL, {"workspace": "acme", "page_size": 2}).json()
    by_cursor = api.get(URL, {"workspace": "acme", "after": first["after"]}).json()
    by_id = api.get(URL, {"workspace": "acme", "after": str(order[1])}).json()
    assert [e["id"] for e in by_cursor["results"]] == order[2:]
    assert by_id["results"] == by_cursor["results"]


def test_the_type_filter_agrees_with_event_type_matches(acme):
    job = job_in_state("running", workspace=acme)
    services.event_append(job_id=job.pk, type="agent.tool.call", actor="x")
    services.event_append(job_id=job.pk, type="jobs.other", actor="x")
    stored = list(
        JobEvent.objects.filter(job=job).order_by(FEED_XID, "id").values_list("type", flat=True)
    )
    settle()
    for patterns in (
        ["job.*"],
        ["job.started"],
        ["agent.*"],
        ["*"],
        ["agent.tool.*", "jobs.other"],
    ):
        batch = workspace_events_after(
            query=FeedQuery(acme.pk, tuple(patterns)), after=FeedPosition(0, 0), limit=100
        )
        assert [e.type for e in batch.events] == [
            t for t in stored if event_type_matches(patterns, t)
        ], patterns


def test_events_older_than_the_xid_column_come_first_in_id_order(api, acme):
    old = job_in_state("running", workspace=acme)
    new = job_in_state("running", workspace=acme)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE job_events_jobevent SET xid = NULL WHERE job_id = %s", [old.pk])
    events = read_all(api, {"workspace": "acme"})
    legacy = list(JobEvent.objects.filter(job=old).order_by("id").values_list("id", flat=True))
    assert [e["id"] for e in events][: len(legacy)] == legacy
    assert all(e["cursor"].startswith("0.") for e in events[: len(legacy)])
    assert {e["job"] for e in events[len(legacy) :]} == {str(new.pk)}


def test_any_role_reads_and_other_workspaces_are_404(acme):
    job_in_state("queued", workspace=acme)
    viewer = UserFactory(username="vera")
    MembershipFactory(user=viewer, workspace=acme, role="viewer")
    client = APIClient()
    client.force_authenticate(viewer)
    settle()
    assert len(client.get(URL, {"workspace": "acme"}).json()["results"]) == 2
    WorkspaceFactory(slug="other")
    response = client.get(URL, {"workspace": "other"})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert client.get(URL, {"workspace": "nope"}).status_code == 404
    assert APIClient().get(URL, {"workspace": "acme"}).status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "workspace"),
        ({"workspace": "acme", "colour": "red"}, "non_field_errors"),
        ({"workspace": "acme", "type": "Job.Started"}, "type"),
        ({"workspace": "acme", "type": "job.**"}, "type"),
        ({"workspace": "acme", "job_type": "x" * 65}, "job_type"),
        ({"workspace": "acme", "after": "abc"}, "after"),
        ({"workspace": "acme", "after": "-1"}, "after"),
        ({"workspace": "acme", "after": "1.2.3"}, "after"),
        ({"workspace": "acme", "after": f"{2**64}.1"}, "after"),
        ({"workspace": "acme", "after": "99999999"}, "after"),
        ({"workspace": "acme", "page_size": "0"}, "page_size"),
        ({"workspace": "acme", "page_size": "x"}, "page_size"),
    ],
)
def test_bad_queries_are_400_with_field_errors(api, acme, params, field):
    response = api.get(URL, params)
    assert response.status_code == 400
    assert field in response.json()


def test_an_event_id_of_another_workspace_is_not_a_position(api, acme):
    other = job_in_state("queued", workspace=WorkspaceFactory(slug="other"))
    event = JobEvent.objects.filter(job=other).first()
    response = api.get(URL, {"workspace": "acme", "after": str(event.pk)})
    assert response.status_code == 400
    assert "after" in response.json()
