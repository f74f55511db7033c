"""``bench.cpu`` against the code as it stands: every operation runs through its real entry point
(test client, broker message, Celery task) and passes its own check, on the test database and
the real Redis."""

import json
import uuid

import pytest
import redis
from celery import Celery
from django.conf import settings
from knox.models import AuthToken

from bench.cpu import WORKSPACE, Operations, measure, task_call
from coordinator.models import CoordinatorKey
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory


def test_task_call_reads_a_message_as_kombu_stores_it_in_redis() -> None:
    queue = f"bench-test-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    app = Celery("bench-test", broker=settings.CELERY_BROKER_URL)
    try:
        sent = app.send_task("bench.noop", args=[1, "two"], kwargs={"three": 3}, queue=queue)
        raw = client.rpop(queue)
    finally:
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
    assert task_call(json.loads(raw)) == ("bench.noop", [1, "two"], {"three": 3}, sent.id)


@pytest.fixture
def operations(transactional_db) -> Operations:
    workspace = WorkspaceFactory(slug=WORKSPACE)
    user = UserFactory(username="bench")
    MembershipFactory(user=user, workspace=workspace, role="member")
    _, token = AuthToken.objects.create(user)
    _, key = CoordinatorKey.objects.create_key(name="bench", all_workspaces=True)
    return Operations(token, key)


def test_every_operation_runs_checked_and_counted(operations) -> None:
    """``measure`` raises if an operation's check fails: a create not 201, a worker run that
    left its job anything but ``completed``, a losing report not refused with 409, ..."""
    summaries = {
        op.name: measure(op, rounds=2, per_round=2, warmup=1).summary() for op in operations.all()
    }
    assert list(summaries) == [
        "healthz",
        "create",
        "worker echo job",
        "progress report",
        "event report",
        "losing terminal report",
    ]
    assert summaries["healthz"]["statements"] == 0
    assert summaries["healthz"]["transactions"] == 0
    for name, figures in summaries.items():
        assert len(figures["cpu ms per round"]) == 2
        assert figures["cpu ms"] > 0
        if name != "healthz":
            # Each writes (or, losing, locks) the job: at least one transaction, one statement
            # naming the job table.
            assert figures["transactions"] >= 1, name
            assert any("runner_jobs_runnerjob" in sql for sql in figures["sql"]), name
