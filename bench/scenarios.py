"""The benchmark scenarios. Each measures one claim next to its baseline, in the same run, and
returns table rows (with the target it is reported against) and its raw figures."""

import base64
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from functools import partial
from typing import Any
from urllib.parse import urlencode

import redis
import requests
from celery import Celery

from bench.load import (
    StreamSwarm,
    concurrently,
    latencies,
    latency_figures,
    percentile,
    timed,
    wrk,
)
from bench.views import CREATE_BASELINE_TABLE
from chaos.stack import Stack, wait_until

LOAD_SECONDS = 10
WARMUP_SECONDS = 2
JOB_BODY = {"workspace": "bench", "type": "echo", "payload": {"n": 1}}
NOOP_TASKS = 1000
E2E_JOBS = 300
E2E_CREATORS = 16
STALL_SECONDS = 20
RACERS = 50
RACE_ROUNDS = 4
STREAM_JOBS = 20
STREAMS_PER_JOB = 10
PINGS_PER_JOB = 5
READ_SAMPLES = 30
EVENTS_IN_READ_JOB = 100
READ_PAGE_SIZE = 10
DEEP_PAGE = 1000
SMALL_ROWS = 10_000
LARGE_ROWS = 1_000_000
ADMIN_USER = "benchadmin"


@dataclass
class Row:
    scenario: str
    measure: str
    value: float | None
    unit: str
    baseline: float | None = None
    # "ratio >= 0.6", "p99 < 50": what the issue asks, and whether this run met it.
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


@dataclass
class Bench:
    """The stack plus what the scenarios share: credentials and the first half of the reads."""

    stack: Stack
    coordinator_key: str = ""
    reader_token: str = ""
    admin_password: str = field(default_factory=lambda: uuid.uuid4().hex)
    read_job: str = ""
    small_reads: dict[str, float | None] = field(default_factory=dict)

    def prepare(self) -> None:
        stack = self.stack
        stack.manage("collectstatic", "--noinput")
        stack.pg.query(CREATE_BASELINE_TABLE)
        self.coordinator_key = stack.manage("create_coordinator_key", "bench").strip()
        self.reader_token = stack.manage(
            "create_api_token", "reader", "--workspace", "seed-0", "--role", "viewer"
        ).strip()
        stack.env["DJANGO_SUPERUSER_PASSWORD"] = self.admin_password
        stack.manage(
            "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "b@example.com"
        )

    # --- HTTP ------------------------------------------------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.stack.token}"}

    @property
    def reader(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.reader_token}"}

    @property
    def coordinator(self) -> dict[str, str]:
        return {"X-API-Key": self.coordinator_key}

    def coordinate(self, path: str, body: dict[str, Any], timeout: float = 30) -> requests.Response:
        return requests.post(
            self.stack.url(f"/api/v1/coordinator/jobs/{path}"),
            json=body,
            headers=self.coordinator,
            timeout=timeout,
        )

    def external_job(self, workspace: str = "bench") -> str:
        """A new agent-task job (left queued for a coordinator): nothing runs it by itself."""
        response = self.coordinate(
            "", {"workspace": workspace, "type": "agent-task", "payload": {}}
        )
        response.raise_for_status()
        return str(response.json()["id"])

    def restart_web(self) -> None:
        self.stack.kill("web")
        self.stack.start_web()

    def flush_broker(self) -> None:
        """Drop the messages of the jobs a throughput run created and no worker ran: the queue
        lists only (not kombu's exchange bindings, without which publishes would be dropped)."""
        client = redis.Redis(port=self.stack.redis.port)
        for key in client.scan_iter("celery*"):
            client.delete(key)

    def count(self, table: str) -> int:
        return int(self.stack.pg.query(f"SELECT count(*) FROM {table}")[0][0])


Result = tuple[list[Row], dict[str, Any]]


def _load(bench: Bench, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    url = bench.stack.url(path)
    wrk(url, seconds=WARMUP_SECONDS, method="POST", body=JOB_BODY, headers=headers)
    return wrk(url, seconds=LOAD_SECONDS, method="POST", body=JOB_BODY, headers=headers).figures()


def create_api(bench: Bench) -> Result:
    """Create-job requests/s next to a bare view doing one INSERT, on the same web server."""
    baseline = _load(bench, "/bench/insert/")
    api = _load(bench, "/api/v1/runner-jobs/", bench.auth)
    bench.flush_broker()
    ratio_target = 0.6
    row = Row(
        "1 create API",
        "create-job requests/s",
        api["requests/s"],
        "req/s",
        baseline["requests/s"],
        f"ratio >= {ratio_target}",
    )
    row.met = row.ratio is not None and row.ratio >= ratio_target
    return [row], {"create-job API": api, "bare INSERT view": baseline}


def _celery_client(bench: Bench) -> Celery:
    return Celery(
        "bench",
        broker=bench.stack.redis.url,
        broker_transport_options={"priority_steps": list(range(10))},
        task_serializer="json",
    )


def _broker_drained(client: redis.Redis) -> bool:
    queued = sum(client.llen(key) for key in client.scan_iter("celery*"))
    return queued == 0 and client.hlen("unacked") == 0


def _wait_for_completions(stack: Stack, ids: list[str]) -> int:
    """Wait until every job in ``ids`` completed, or none did for ``STALL_SECONDS``; how many
    completed."""
    completed, last_change = 0, time.monotonic()
    while completed < len(ids) and time.monotonic() - last_change < STALL_SECONDS:
        time.sleep(0.2)
        now_completed = stack.statuses(ids).get("completed", 0)
        if now_completed != completed:
            completed, last_change = now_completed, time.monotonic()
    return completed


def end_to_end(bench: Bench) -> Result:
    """Jobs/s from API create to completed (all events written), next to no-op Celery tasks
    drained by the same worker; and the enqueue-to-start latency."""
    stack = bench.stack
    stack.start_procfile("worker")
    client = redis.Redis(port=stack.redis.port)
    celery = _celery_client(bench)
    # Warm-up: the worker is up and its pool forked once one task has gone through.
    celery.send_task("bench.noop")
    assert wait_until(lambda: _broker_drained(client), 60, 0.05), "the worker did not start"
    time.sleep(1)

    began = time.monotonic()
    for _ in range(NOOP_TASKS):
        celery.send_task("bench.noop")
    published = time.monotonic() - began
    assert wait_until(lambda: _broker_drained(client), 300, 0.02)
    noop_rate = NOOP_TASKS / (time.monotonic() - began)

    sessions = threading.local()

    def create(n: int) -> str:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        body = {**JOB_BODY, "payload": {"n": n}}
        response = sessions.session.post(
            stack.url("/api/v1/runner-jobs/"), json=body, headers=bench.auth, timeout=30
        )
        return str(response.json()["id"])

    began_wall = time.time()
    ids = concurrently([partial(create, n) for n in range(E2E_JOBS)], E2E_CREATORS)
    created = time.time() - began_wall
    completed = _wait_for_completions(stack, ids)
    (last_done, completions, mismatches, p50, p95) = stack.pg.query(
        """
        WITH jobs AS (SELECT id, completed_at, version FROM runner_jobs_runnerjob
                      WHERE id = ANY(%(ids)s::uuid[])),
             waits AS (SELECT s.timestamp - c.timestamp AS wait
                       FROM job_events_jobevent c JOIN job_events_jobevent s USING (job_id)
                       WHERE c.job_id = ANY(%(ids)s::uuid[])
                         AND c.type = 'job.created' AND s.type = 'job.started')
        SELECT (SELECT extract(epoch FROM max(completed_at)) FROM jobs),
               (SELECT count(*) FROM job_events_jobevent
                WHERE job_id = ANY(%(ids)s::uuid[]) AND type = 'job.completed'),
               -- Every write bumps the version and writes one event: all events are there.
               (SELECT count(*) FROM jobs WHERE version <> (SELECT count(*)
                FROM job_events_jobevent e WHERE e.job_id = jobs.id)),
               (SELECT extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY wait))
                FROM waits),
               (SELECT extract(epoch FROM percentile_cont(0.95) WITHIN GROUP (ORDER BY wait))
                FROM waits)
        """,
        {"ids": ids},
    )[0]
    stack.kill("worker")
    job_rate = completed / (float(last_done) - began_wall) if completed else None
    ratio_target = 0.7
    rate_row = Row(
        "2 end to end",
        "jobs/s, create to completed",
        _round(job_rate),
        "jobs/s",
        round(noop_rate, 1),
        f"ratio >= {ratio_target}",
    )
    rate_row.met = rate_row.ratio is not None and rate_row.ratio >= ratio_target
    rows = [
        rate_row,
        Row("2 end to end", "enqueue->start p50", _ms(p50), "ms"),
        Row("2 end to end", "enqueue->start p95", _ms(p95), "ms"),
    ]
    figures = {
        "jobs": len(ids),
        "completed": completed,
        # A job left queued here was not run although the broker took its message; the sweeper
        # re-sends such a job after RUNNER_REDISPATCH_AFTER_SECONDS (see docs/benchmarks.md).
        "left queued": stack.statuses(ids).get("queued", 0),
        "job.completed events": completions,
        "jobs whose version differs from their event count": mismatches,
        "create s (16 clients)": round(created, 2),
        "no-op tasks": NOOP_TASKS,
        "no-op publish s": round(published, 2),
        "no-op tasks/s": round(noop_rate, 1),
        "worker": "Procfile worker line (prefork, WORKER_CONCURRENCY default 4)",
    }
    return rows, figures


def _race(
    bench: Bench, barrier: threading.Barrier, job_id: str, body: dict[str, Any]
) -> tuple[float, int]:
    """One racer: wait for the others, then report completion; (milliseconds, status code)."""
    barrier.wait()
    ms, response = timed(partial(bench.coordinate, f"{job_id}/complete/", body))
    return ms, response.status_code


def racing_reports(bench: Bench) -> Result:
    """50 coordinator `complete` reports racing on one running job: one wins, 49 get 409."""
    latency_ms: list[float] = []
    winners: list[int] = []
    codes: Counter[int] = Counter()
    for _ in range(RACE_ROUNDS):
        job_id = bench.external_job()
        lease = bench.coordinate(f"{job_id}/status/", {"status": "running"}).json()["lease_token"]
        barrier = threading.Barrier(RACERS)
        reports = [
            partial(_race, bench, barrier, job_id, {"result": {"racer": n}, "lease_token": lease})
            for n in range(RACERS)
        ]
        outcomes = concurrently(reports, RACERS)
        latency_ms += [ms for ms, _ in outcomes]
        round_codes = Counter(code for _, code in outcomes)
        codes.update(round_codes)
        winners.append(round_codes.get(200, 0))
    p99 = percentile(latency_ms, 99)
    rows = [
        Row("3 racing reports", "complete p50", _round(percentile(latency_ms, 50)), "ms"),
        Row(
            "3 racing reports",
            "complete p99",
            _round(p99),
            "ms",
            target="< 50 ms",
            met=p99 is not None and p99 < 50,
        ),
        Row(
            "3 racing reports",
            "rounds with exactly one winner",
            winners.count(1),
            "rounds",
            target=f"= {RACE_ROUNDS}",
            met=winners == [1] * RACE_ROUNDS,
        ),
    ]
    return rows, {
        "racers": RACERS,
        "rounds": RACE_ROUNDS,
        "winners per round": winners,
        "status codes": dict(codes),
    }


def event_streams(bench: Bench) -> Result:
    """API requests/s with and without 200 open event streams, and event-to-stream latency."""
    stack = bench.stack
    jobs = [bench.external_job() for _ in range(STREAM_JOBS)]
    without = _load(bench, "/api/v1/runner-jobs/", bench.auth)
    swarm = StreamSwarm(
        stack.url(""), stack.token, [j for j in jobs for _ in range(STREAMS_PER_JOB)]
    )
    opening, _ = timed(lambda: swarm.open(timeout=60))
    unsent: Counter[str] = Counter()
    try:
        with_streams = _load(bench, "/api/v1/runner-jobs/", bench.auth)
        for _ in range(PINGS_PER_JOB):
            for job_id in jobs:
                try:
                    bench.coordinate(
                        f"{job_id}/events/", {"type": "bench.ping", "payload": {}}, timeout=5
                    )
                except requests.RequestException as exc:
                    unsent[type(exc).__name__] += 1
            time.sleep(0.2)
            if unsent:  # the web tier is not answering: one failed round tells enough
                break
        wait_until(lambda: _pings(swarm) >= swarm.opened * PINGS_PER_JOB, 30)
        delays_ms = [s * 1000 for _, kind, s in swarm.arrivals if kind == "bench.ping"]
    finally:
        swarm.close()
        # A web tier whose request threads are all held by streams stays stuck until each
        # stream notices its client left: a fresh one, so the next scenarios measure the API.
        bench.restart_web()
    bench.flush_broker()
    cost = 1 - with_streams["requests/s"] / without["requests/s"] if without["requests/s"] else None
    p50 = percentile(delays_ms, 50)
    rows = [
        Row(
            "5 event streams",
            "create-job req/s with 200 open streams",
            with_streams["requests/s"],
            "req/s",
            without["requests/s"],
            "cost < 20 %",
            cost is not None and cost < 0.2,
        ),
        Row(
            "5 event streams",
            "event-to-stream p50",
            _round(p50),
            "ms",
            target="< 100 ms",
            met=p50 is not None and p50 < 100,
        ),
        Row("5 event streams", "event-to-stream p95", _round(percentile(delays_ms, 95)), "ms"),
    ]
    figures = {
        "streams asked": len(swarm.job_ids),
        "streams open": swarm.opened,
        "streams refused or failed": dict(Counter(swarm.failed)),
        "opening s": round(opening / 1000, 1),
        "without streams": without,
        "with streams": with_streams,
        "pings not sent (errors)": dict(unsent),
        "pings delivered": len(delays_ms),
        "pings expected (open streams x pings)": swarm.opened * PINGS_PER_JOB,
    }
    return rows, figures


def _pings(swarm: StreamSwarm) -> int:
    return sum(1 for _, kind, _ in swarm.arrivals if kind == "bench.ping")


# --- reads at 10 000 and 1 000 000 rows ----------------------------------------------------

READS = ("events of one job", "list page 1", f"list page {DEEP_PAGE}")


def _seed_to(bench: Bench, rows: int) -> None:
    """Top the reader's workspace up to ``rows`` jobs (one event each) with SQL."""
    have = int(
        bench.stack.pg.query(
            "SELECT count(*) FROM runner_jobs_runnerjob j JOIN workspaces_workspace w "
            "ON w.id = j.workspace_id WHERE w.slug = 'seed-0'"
        )[0][0]
    )
    if rows > have:
        bench.stack.manage(
            "seed_jobs",
            "--jobs",
            str(rows - have),
            "--events-per-job",
            "1",
            "--workspaces",
            "1",
            "--append",
        )


def _deep_page_cursor(bench: Bench) -> str:
    """The cursor DRF would hand out for page ``DEEP_PAGE``: the position of the last row of the
    page before it (``p``, the ``created_at`` as Django prints it)."""
    (created_at,) = bench.stack.pg.query(
        "SELECT j.created_at FROM runner_jobs_runnerjob j JOIN workspaces_workspace w "
        "ON w.id = j.workspace_id WHERE w.slug = 'seed-0' "
        "ORDER BY j.created_at DESC, j.id DESC OFFSET %s LIMIT 1",
        [(DEEP_PAGE - 1) * READ_PAGE_SIZE - 1],
    )[0]
    position = str(created_at.astimezone(UTC))
    return base64.b64encode(urlencode({"p": position}).encode()).decode()


def _read_job(bench: Bench) -> str:
    """The job whose events are read: ``EVENTS_IN_READ_JOB`` events, in the reader's workspace."""
    job_id = bench.external_job(workspace="seed-0")
    for n in range(EVENTS_IN_READ_JOB - 2):  # job.created and job.queued are there already
        bench.coordinate(f"{job_id}/events/", {"type": "bench.filler", "payload": {"n": n}})
    return job_id


def _reads(bench: Bench, job_id: str) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    session = requests.Session()
    session.headers.update(bench.reader)
    base = bench.stack.url("/api/v1/runner-jobs/")
    urls = {
        READS[0]: f"{base}{job_id}/events/",
        READS[1]: f"{base}?page_size={READ_PAGE_SIZE}",
        READS[2]: f"{base}?page_size={READ_PAGE_SIZE}&cursor={_deep_page_cursor(bench)}",
    }
    figures: dict[str, dict[str, Any]] = {}
    for name, url in urls.items():
        check = session.get(url, timeout=30)
        check.raise_for_status()
        values = latencies(partial(session.get, url, timeout=30), times=READ_SAMPLES)
        figures[name] = {"results": len(check.json()["results"]), **latency_figures(values, 50, 95)}
    tables = {
        "jobs": bench.count("runner_jobs_runnerjob"),
        "events": bench.count("job_events_jobevent"),
    }
    return figures, tables


def reads_small(bench: Bench) -> Result:
    """The reads at 10 000 rows; ``reads_large`` compares them with 1 000 000."""
    bench.read_job = _read_job(bench)
    _seed_to(bench, SMALL_ROWS)
    figures, tables = _reads(bench, bench.read_job)
    bench.small_reads = {name: figures[name]["p50 ms"] for name in READS}
    rows = [
        Row("4 reads", f"{name} p50 at 10 k rows", figures[name]["p50 ms"], "ms") for name in READS
    ]
    return rows, {"rows in tables": tables, **figures}


def reads_large(bench: Bench) -> Result:
    """The same reads at 1 000 000 rows, against the figures at 10 000."""
    began = time.monotonic()
    _seed_to(bench, LARGE_ROWS)
    seeding = time.monotonic() - began
    figures, tables = _reads(bench, bench.read_job or _read_job(bench))
    rows = []
    for name in READS:
        row = Row(
            "4 reads",
            f"{name} p50 at 1 M rows",
            figures[name]["p50 ms"],
            "ms",
            bench.small_reads.get(name),
            "ratio <= 1.5",
        )
        row.met = row.ratio is not None and row.ratio <= 1.5
        rows.append(row)
    return rows, {"rows in tables": tables, "seeding s": round(seeding, 1), **figures}


def admin_changelist(bench: Bench) -> Result:
    """The staff admin's job list (plain and filtered) and a job page at 1 000 000 jobs."""
    session = requests.Session()
    login = bench.stack.url("/admin/login/")
    session.get(login, timeout=30)
    response = session.post(
        login,
        data={
            "username": ADMIN_USER,
            "password": bench.admin_password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        timeout=30,
    )
    assert response.url.endswith("/admin/"), "admin login failed"
    (job_id,) = bench.stack.pg.query(
        "SELECT id FROM runner_jobs_runnerjob ORDER BY created_at DESC LIMIT 1 OFFSET 5000"
    )[0]
    pages = {
        "changelist": "/admin/runner_jobs/runnerjob/",
        "changelist status=failed": "/admin/runner_jobs/runnerjob/?status__exact=failed",
        "job page": f"/admin/runner_jobs/runnerjob/{job_id}/change/",
    }
    figures: dict[str, Any] = {"jobs": bench.count("runner_jobs_runnerjob")}
    rows = []
    for name, path in pages.items():
        url = bench.stack.url(path)
        status = session.get(url, timeout=30).status_code
        values = latencies(partial(session.get, url, timeout=30), times=READ_SAMPLES)
        figures[name] = {"status": status, **latency_figures(values, 50, 95)}
        p50 = figures[name]["p50 ms"]
        rows.append(
            Row(
                "6 admin at 1 M jobs",
                f"{name} p50",
                p50,
                "ms",
                target="< 300 ms",
                met=status == 200 and p50 is not None and p50 < 300,
            )
        )
    return rows, figures


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _ms(seconds: Any) -> float | None:
    return round(float(seconds) * 1000, 1) if seconds is not None else None


# The seeded rows come last: seed_jobs makes some of them pending, queued or running, and a
# worker (scenario 2) would be handed those by the sweeper in the middle of its measurement.
SCENARIOS = {
    "create API vs bare INSERT": create_api,
    "end to end vs Celery no-op": end_to_end,
    "racing terminal reports": racing_reports,
    "200 open event streams": event_streams,
    "reads at 10 k rows": reads_small,
    "reads at 1 M rows": reads_large,
    "admin changelist at 1 M jobs": admin_changelist,
}
