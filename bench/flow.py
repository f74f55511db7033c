"""Flow-control rows (SPEC §8, docs/decisions/0140-dispatcher.md), on the Procfile worker
(``WORKER_CONCURRENCY`` slots, 4 by default):

- fairness: workspace A creates ``FAIR_BACKLOG`` short jobs, then workspace B creates one; B's
  wait from create to start, next to A's drain rate (jobs/s) while B's job ran and over A's whole
  backlog;
- keyed jobs: ``KEYED_JOBS`` one-second jobs with one concurrency key and limit 2: the most
  running at once (from their events) and the time from the first start to the last completion,
  next to its floor (``KEYED_JOBS / 2`` seconds).
"""

from functools import partial
from typing import TYPE_CHECKING, Any

import requests

from bench.load import concurrently
from chaos.stack import wait_until

if TYPE_CHECKING:
    from bench.scenarios import Bench, Result

FAIR_BACKLOG = 2000
FAIR_JOB_SECONDS = 0.05
FAIR_CREATORS = 8
KEYED_JOBS = 20
KEYED_LIMIT = 2
DRAIN_TIMEOUT_SECONDS = 600


def _creator(bench: "Bench", workspace: str) -> tuple[requests.Session, dict[str, str]]:
    token = bench.stack.manage(
        "create_api_token", f"{workspace}-user", "--workspace", workspace, "--role", "member"
    ).strip()
    return requests.Session(), {"Authorization": f"Token {token}"}


def _create(
    bench: "Bench", session: requests.Session, headers: dict[str, str], body: dict[str, Any]
) -> str:
    response = session.post(
        bench.stack.url("/api/v1/runner-jobs/"), json=body, headers=headers, timeout=30
    )
    response.raise_for_status()
    return str(response.json()["id"])


def _left(bench: "Bench", ids: list[str]) -> int:
    return int(
        bench.stack.pg.query(
            "SELECT count(*) FROM runner_jobs_runnerjob WHERE id = ANY(%s::uuid[]) "
            "AND status IN ('pending', 'queued', 'running')",
            [ids],
        )[0][0]
    )


def _rate(bench: "Bench", ids: list[str], since: str, until: str) -> float | None:
    """A's completions per second between two database timestamps."""
    (done, seconds) = bench.stack.pg.query(
        "SELECT count(*), extract(epoch FROM %s::timestamptz - %s::timestamptz) "
        "FROM runner_jobs_runnerjob WHERE id = ANY(%s::uuid[]) "
        "AND completed_at BETWEEN %s::timestamptz AND %s::timestamptz",
        [until, since, ids, since, until],
    )[0]
    return float(done) / float(seconds) if seconds else None


def fairness(bench: "Bench") -> "Result":
    from bench.scenarios import Row, _round

    stack = bench.stack
    stack.start_procfile("worker")
    _a_session, a_auth = _creator(bench, "fair-a")
    b_session, b_auth = _creator(bench, "fair-b")
    body = {"workspace": "fair-a", "type": "sleep", "payload": {"seconds": FAIR_JOB_SECONDS}}
    sessions = [requests.Session() for _ in range(FAIR_CREATORS)]
    calls = [
        partial(_create, bench, sessions[n % FAIR_CREATORS], a_auth, body)
        for n in range(FAIR_BACKLOG)
    ]
    backlog = concurrently(calls, FAIR_CREATORS)
    live_when_b = _left(bench, backlog)
    b_body = {"workspace": "fair-b", "type": "echo", "payload": {}}
    b_job = _create(bench, b_session, b_auth, b_body)
    assert wait_until(lambda: _left(bench, [b_job]) == 0, 60, 0.05), "B's job did not run"
    assert wait_until(lambda: _left(bench, backlog) == 0, DRAIN_TIMEOUT_SECONDS, 0.2)
    stack.kill("worker")
    (wait, b_created, b_done, a_first, a_last) = stack.pg.query(
        "SELECT extract(epoch FROM b.started_at - b.created_at), b.created_at::text, "
        "b.completed_at::text, (SELECT min(started_at)::text FROM runner_jobs_runnerjob "
        "WHERE id = ANY(%s::uuid[])), (SELECT max(completed_at)::text FROM runner_jobs_runnerjob "
        "WHERE id = ANY(%s::uuid[])) FROM runner_jobs_runnerjob b WHERE b.id = %s",
        [backlog, backlog, b_job],
    )[0]
    overall = _rate(bench, backlog, a_first, a_last)
    around_b = _rate(bench, backlog, b_created, b_done)
    wait_s = float(wait)
    rows = [
        Row(
            "11 fairness",
            f"B's wait while A's {FAIR_BACKLOG} drain",
            _round(wait_s * 1000),
            "ms",
            target="< 1000 ms",
            met=wait_s < 1,
        ),
        Row("11 fairness", "A's jobs/s over its backlog", _round(overall), "jobs/s"),
    ]
    figures = {
        "A's jobs still live when B created": live_when_b,
        "A's jobs/s from B's create to its completion": around_b,
        "job seconds": FAIR_JOB_SECONDS,
    }
    return rows, figures


def keyed_jobs(bench: "Bench") -> "Result":
    from bench.scenarios import Row, _round

    stack = bench.stack
    stack.start_procfile("worker")
    session, auth = _creator(bench, "keyed")
    body = {
        "workspace": "keyed",
        "type": "sleep",
        "payload": {"seconds": 1},
        "concurrency_key": "account-42",
        "concurrency_limit": KEYED_LIMIT,
    }
    ids = [_create(bench, session, auth, body) for _ in range(KEYED_JOBS)]
    assert wait_until(lambda: _left(bench, ids) == 0, 120, 0.1), "keyed jobs did not finish"
    stack.kill("worker")
    marks = stack.pg.query(
        "SELECT extract(epoch FROM timestamp), CASE WHEN type = 'job.started' THEN 1 ELSE -1 END "
        "FROM job_events_jobevent WHERE job_id = ANY(%s::uuid[]) "
        "AND type IN ('job.started', 'job.completed', 'job.failed')",
        [ids],
    )
    running = most = 0
    for _, step in sorted((float(t), int(s)) for t, s in marks):
        running += step
        most = max(most, running)
    times = sorted(float(t) for t, _ in marks)
    elapsed = times[-1] - times[0]
    floor = KEYED_JOBS / KEYED_LIMIT
    rows = [
        Row(
            "12 keyed jobs",
            f"{KEYED_JOBS} x 1 s, key limit {KEYED_LIMIT}: first start to last end",
            _round(elapsed),
            "s",
            floor,
            target="~10 s, never > 2 at once",
            met=most <= KEYED_LIMIT and elapsed < floor * 1.3,
        ),
        Row("12 keyed jobs", "most running at once", most, "jobs"),
    ]
    return rows, {"elapsed": elapsed, "most running": most}
