"""SQL statements per operation of the hot path, pinned (docs/decisions/0100-fast-path.md). Time
is measured by the benchmarks, never here; statement counts are the steady measure."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from job_events.herald import webhook_endpoints_memo
from runner_jobs import services
from runner_jobs.models import JobEvent
from runner_jobs.services.policies import job_type_policy_update
from runner_jobs.tasks import execute_job_task
from tests.factories import job_in_state

pytestmark = pytest.mark.django_db(transaction=True)


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries]


def test_a_worker_runs_an_echo_job_in_three_statements():
    """The claim (the dispatcher's choice, job + ``job.started``) in a transaction, so that a
    keyed job's claim can hold its key's lock until commit (docs/decisions/0140-dispatcher.md);
    the workspace's webhook endpoints once for the task; complete (job + ``job.completed``)."""
    job = job_in_state("queued")
    with CaptureQueriesContext(connection) as captured:
        execute_job_task.apply(args=[str(job.pk)])
    sql = [q for q in statements(captured) if q not in ("BEGIN", "COMMIT")]
    assert len(sql) == 3, "\n".join(q[:100] for q in sql)
    assert len(statements(captured)) == 5
    job.refresh_from_db()
    assert (job.status, job.version) == ("completed", 4)
    assert job.version == JobEvent.objects.filter(job=job).count()


@pytest.mark.parametrize("limited", ["key", "type"])
def test_a_keyed_or_capped_claim_counts_once_more(limited):
    """A job with a concurrency key, or of a type with ``max_running`` in its workspace: its
    claim takes the key's (the type's) lock in the claim statement and counts the running jobs
    after it; the completing statement says whether to ring for the slot it frees (no query of
    its own)."""
    if limited == "key":
        job = job_in_state("queued", concurrency_key="k", concurrency_limit=2)
    else:
        job = job_in_state("queued")
        job_type_policy_update(workspace=job.workspace, type="echo", actor="u", max_running=2)
    with CaptureQueriesContext(connection) as captured:
        execute_job_task.apply()
    sql = [q for q in statements(captured) if q not in ("BEGIN", "COMMIT")]
    assert len(sql) == 4, "\n".join(q[:100] for q in sql)
    assert sql[1].startswith("SELECT COUNT(*)")
    job.refresh_from_db()
    assert job.status == "completed"


@pytest.mark.parametrize("report", ["progress", "event"])
def test_a_report_is_one_conditional_statement(report):
    job = job_in_state("running", type="agent-task")
    with webhook_endpoints_memo():
        services.job_progress_update(job_id=job.pk, progress=1, actor="c")  # reads endpoints
        with CaptureQueriesContext(connection) as captured:
            if report == "progress":
                services.job_progress_update(
                    job_id=job.pk, progress=50, actor="c", lease_token=job.lease_token
                )
            else:
                services.event_append(
                    job_id=job.pk, type="agent.note", actor="c", lease_token=job.lease_token
                )
    sql = statements(captured)
    assert len(sql) == 1 and sql[0].startswith("WITH job AS (UPDATE"), sql


def test_a_losing_terminal_report_costs_two_statements():
    """The conditional UPDATE matches nothing; one read then says why (409)."""
    job = job_in_state("completed", type="agent-task")
    with (
        CaptureQueriesContext(connection) as captured,
        pytest.raises(services.InvalidTransitionError),
    ):
        services.job_complete(job_id=job.pk, result={}, actor="c")
    assert len(statements(captured)) == 2
