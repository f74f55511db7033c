"""The benchmark scenarios. Each measures one claim next to its baseline, in the same run, and
returns table rows (with the target it is reported against) and its raw figures."""

import base64
import json
import os
import subprocess
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

import redis
import requests
from celery import Celery

from bench import flow
from bench.load import (
    StreamSwarm,
    concurrently,
    latencies,
    latency_figures,
    percentile,
    timed,
    wrk,
)
from bench.memory import Snapshot, largest_after, tree_memory
from bench.peer import PEER_PROCESS, Peer, worker_concurrency
from bench.views import CREATE_BASELINE_TABLE
from chaos.stack import ROOT, VENV_BIN, Stack, procfile_command, wait_until

LOAD_SECONDS = 10
WARMUP_SECONDS = 2
JOB_BODY = {"workspace": "bench", "type": "echo", "payload": {"n": 1}}
NOOP_TASKS = 1000
E2E_JOBS = 300
E2E_CREATORS = 16
STALL_SECONDS = 20
RACERS = 50
RACE_ROUNDS = 4
REPORTERS = 10
REPORTS_EACH = 30
CPU_TIMEOUT_SECONDS = 900
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
BULK_JOBS = 10_000
BULK_WORKSPACE = "bulk-0"
BULK_TIMEOUT_SECONDS = 300
CREATE_BASELINE_SECONDS = 5


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
    memory: list[Snapshot] = field(default_factory=list)

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

    def discard_unrun(self) -> None:
        """Drop the jobs a throughput run created and no worker ran, so that no later scenario's
        worker runs them: their broker messages (the queue lists only, not kombu's exchange
        bindings, without which publishes would be dropped) and, since a worker may also take
        its work from the database, the jobs themselves, marked cancelled in SQL (throwaway
        rows: no event, nothing checks them)."""
        client = redis.Redis(port=self.stack.redis.port)
        for key in client.scan_iter("celery*"):
            client.delete(key)
        self.stack.pg.query(
            "UPDATE runner_jobs_runnerjob SET status = 'cancelled' "
            "WHERE status IN ('pending', 'queued') "
            "AND workspace_id = (SELECT id FROM workspaces_workspace WHERE slug = %s)",
            [self.stack.name],
        )

    def count(self, table: str) -> int:
        return int(self.stack.pg.query(f"SELECT count(*) FROM {table}")[0][0])

    def remember_memory(self, process: str, moment: str) -> None:
        """RSS and PSS of ``process``'s tree now, if it runs (``web``, ``worker``, ...)."""
        proc = self.stack.procs.get(process)
        if proc is not None and proc.poll() is None:
            self.memory.append(Snapshot(process, moment, tree_memory(proc.pid)))


Result = tuple[list[Row], dict[str, Any]]


def _load(bench: Bench, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    url = bench.stack.url(path)
    wrk(url, seconds=WARMUP_SECONDS, method="POST", body=JOB_BODY, headers=headers)
    return wrk(url, seconds=LOAD_SECONDS, method="POST", body=JOB_BODY, headers=headers).figures()


def create_api(bench: Bench) -> Result:
    """Create-job requests/s next to a bare view doing one INSERT, on the same web server."""
    baseline = _load(bench, "/bench/insert/")
    api = _load(bench, "/api/v1/runner-jobs/", bench.auth)
    bench.discard_unrun()
    # Issue 13's goal: the create API at 0.4 of a bare INSERT view or better.
    ratio_target = 0.4
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


def peer_drain(bench: Bench) -> dict[str, Any]:
    """Procrastinate's worker, at our worker's concurrency, draining ``NOOP_TASKS`` no-op jobs
    (the peer baseline of the end-to-end rate); its figures."""
    peer = Peer(bench.stack)
    peer.prepare()
    concurrency = worker_concurrency(procfile_command("worker"), bench.stack.env)
    peer.start_worker(concurrency)
    try:
        peer.defer(1)  # warm-up: the worker is up and has run one job
        assert peer.wait_drained(60), "the Procrastinate worker did not start"
        time.sleep(1)
        bench.remember_memory(PEER_PROCESS, "idle before its run")
        figures = peer.drain(NOOP_TASKS)
        bench.remember_memory(PEER_PROCESS, f"after {NOOP_TASKS} no-op jobs")
    finally:
        peer.stop_worker()
    return {
        "worker": f"manage.py procrastinate worker --concurrency {concurrency}",
        "task": "sync def, returns at once (run on a thread by the worker)",
        **figures,
    }


def end_to_end(bench: Bench) -> Result:
    """Jobs/s from API create to completed (all events written), next to no-op jobs drained by
    the same Celery worker and by Procrastinate's; and the enqueue-to-start latency."""
    stack = bench.stack
    try:
        peer = peer_drain(bench)
    except Exception:  # a baseline that failed: the other figures still count
        peer = {"error": traceback.format_exc(limit=4)}
    peer_rate = peer.get("jobs/s")

    stack.start_procfile("worker")
    client = redis.Redis(port=stack.redis.port)
    celery = _celery_client(bench)
    # Warm-up: the worker is up and its pool forked once one task has gone through.
    celery.send_task("bench.noop")
    assert wait_until(lambda: _broker_drained(client), 60, 0.05), "the worker did not start"
    time.sleep(1)
    bench.remember_memory("worker", "idle before its run")

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
    time.sleep(1)  # the pool's last acknowledgements: idle again
    bench.remember_memory("worker", f"after {NOOP_TASKS} no-op tasks and {E2E_JOBS} echo jobs")
    stack.kill("worker")
    job_rate = completed / (float(last_done) - began_wall) if completed else None
    # Issue 13's goal: end to end at 0.4 of the Celery no-op drain or better.
    ratio_target = 0.4
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
        Row("2 end to end", "Celery no-op drain", round(noop_rate, 1), "jobs/s"),
        Row(
            "2 end to end",
            "Procrastinate no-op drain (vs Celery)",
            peer_rate,
            "jobs/s",
            round(noop_rate, 1),
        ),
        rate_row,
        Row(
            "2 end to end",
            "jobs/s, create to completed (vs Procrastinate)",
            _round(job_rate),
            "jobs/s",
            peer_rate,
        ),
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
        "Procrastinate": peer,
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
            target="< 150 ms",
            met=p99 is not None and p99 < 150,
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


@dataclass
class Report:
    kind: str  # "progress" or "events"
    value: int  # the progress reported, or the report's number
    status: int
    code: str | None  # the error's "code", if refused
    began: float
    ended: float


def reporter_progress(reporter: int, report: int) -> int:
    """The progress reporter ``reporter`` sends in its ``report``-th report: values spread over
    0-100 and out of order between reporters, so the stored maximum is tested."""
    return (reporter * 31 + report * 7) % 101


def _reporter(
    bench: Bench, barrier: threading.Barrier, job_id: str, lease: str, n: int
) -> list[Report]:
    """One of the concurrent reporters: after the barrier, ``REPORTS_EACH`` reports, progress and
    custom events in turn, on a keep-alive connection of its own."""
    session = requests.Session()
    session.headers.update(bench.coordinator)
    url = bench.stack.url(f"/api/v1/coordinator/jobs/{job_id}/")
    reports = []
    barrier.wait()
    for i in range(REPORTS_EACH):
        if i % 2 == 0:
            kind, value = "progress", reporter_progress(n, i)
            body: dict[str, Any] = {"progress": value}
        else:
            kind, value = "events", i
            body = {"type": "bench.report", "payload": {"reporter": n, "report": i}}
        began = time.monotonic()
        response = session.post(f"{url}{kind}/", json={**body, "lease_token": lease}, timeout=30)
        code = None if response.ok else response.json().get("code")
        reports.append(Report(kind, value, response.status_code, code, began, time.monotonic()))
    return reports


def reporter_figures(reports: list[Report]) -> dict[str, Any]:
    """What the reporters saw: accepted and refused reports (by status and code), accepted
    reports/s over the whole burst, and the highest progress accepted."""
    accepted = [r for r in reports if 200 <= r.status < 300]
    refused = Counter(f"{r.status} {r.code}" for r in reports if not 200 <= r.status < 300)
    seconds = max(r.ended for r in reports) - min(r.began for r in reports) if reports else 0
    return {
        "reports": len(reports),
        "accepted": len(accepted),
        "accepted progress": sum(1 for r in accepted if r.kind == "progress"),
        "accepted events": sum(1 for r in accepted if r.kind == "events"),
        "refused": sum(refused.values()),
        "refused by status and code": dict(refused),
        "seconds": round(seconds, 3),
        "accepted reports/s": round(len(accepted) / seconds, 1) if seconds else None,
        "highest accepted progress": max(
            (r.value for r in accepted if r.kind == "progress"), default=None
        ),
    }


def concurrent_reporters(bench: Bench) -> Result:
    """10 coordinator threads reporting progress and custom events on one running job at once:
    none should be refused, every accepted report has its event, the progress is the maximum."""
    job_id = bench.external_job()
    lease = bench.coordinate(f"{job_id}/status/", {"status": "running"}).json()["lease_token"]
    barrier = threading.Barrier(REPORTERS)
    calls = [partial(_reporter, bench, barrier, job_id, lease, n) for n in range(REPORTERS)]
    reports = [r for thread in concurrently(calls, REPORTERS) for r in thread]
    figures = reporter_figures(reports)
    (progress, version, events, custom, progress_events) = bench.stack.pg.query(
        """
        SELECT j.progress, j.version, count(e.id),
               count(e.id) FILTER (WHERE e.type = 'bench.report'),
               count(e.id) FILTER (WHERE e.type = 'job.progress')
        FROM runner_jobs_runnerjob j LEFT JOIN job_events_jobevent e ON e.job_id = j.id
        WHERE j.id = %s GROUP BY j.id
        """,
        [job_id],
    )[0]
    stored = {
        "progress": progress,
        "version": version,
        "events": events,
        "bench.report events": custom,
        "job.progress events": progress_events,
    }
    # Every accepted report has its event, no refused one has, and the version counts events.
    consistent = (
        custom == figures["accepted events"]
        and progress_events == figures["accepted progress"]
        and progress == figures["highest accepted progress"]
        and version == events
    )
    rate = figures["accepted reports/s"]
    rows = [
        Row(
            "8 concurrent reporters",
            f"refused of {len(reports)} reports ({REPORTERS} threads, one job)",
            figures["refused"],
            "reports",
            target="= 0",
            met=figures["refused"] == 0,
        ),
        Row(
            "8 concurrent reporters",
            "accepted reports/s",
            rate,
            "reports/s",
            target=">= 300",
            met=rate is not None and rate >= 300,
        ),
        Row(
            "8 concurrent reporters",
            "events, progress and version agree with the 2xx",
            int(consistent),
            "yes=1",
            target="= 1",
            met=consistent,
        ),
    ]
    return rows, {**figures, "stored": stored, "reporters": REPORTERS, "each": REPORTS_EACH}


# --- CPU and statements per operation, in process ---------------------------------------------

# The goals per operation: CPU ms, statements and transactions at most (None: no goal).
CPU_GOALS: dict[str, tuple[float | None, int | None, int | None]] = {
    "healthz": (None, None, None),
    "create": (6, 6, 1),
    "worker echo job": (5, 6, None),
    "progress report": (3, None, None),
    "event report": (3, None, None),
    "losing terminal report": (2, None, None),
}


def cpu_rows(figures: dict[str, Any]) -> list[Row]:
    """Two rows per operation of ``bench.cpu``'s figures: CPU ms (next to ``/healthz`` for the
    requests) and statements (with their transactions), against the issue's goals."""
    rows = []
    healthz = figures.get("healthz", {}).get("cpu ms")
    for name, (cpu_goal, statements_goal, transactions_goal) in CPU_GOALS.items():
        if name not in figures:
            continue
        op = figures[name]
        cpu = Row(
            "7 CPU per operation",
            f"{name}: CPU",
            op["cpu ms"],
            "ms",
            healthz if name not in {"healthz", "worker echo job"} else None,
        )
        if cpu_goal is not None:
            cpu.target, cpu.met = f"<= {cpu_goal} ms", op["cpu ms"] <= cpu_goal
        count = op["transactions"]
        statements = Row(
            "7 CPU per operation",
            f"{name}: SQL statements, {plural(count, 'transaction')}",
            op["statements"],
            "statements",
        )
        goals = []
        if statements_goal is not None:
            goals.append(f"<= {statements_goal}")
        if transactions_goal is not None:
            goals.append(f"<= {transactions_goal} transaction")
        if goals:
            statements.target = ", ".join(goals)
            statements.met = (statements_goal is None or op["statements"] <= statements_goal) and (
                transactions_goal is None or count <= transactions_goal
            )
        rows += [cpu, statements]
    return rows


def cpu_per_operation(bench: Bench) -> Result:
    """CPU ms and SQL statements of each operation, in one process with production settings
    (``python -m bench.cpu``), against the stack's database and broker."""
    stack = bench.stack
    # Beat's sweeps would land in the queues the worker operation takes its messages from.
    stack.kill("beat")
    bench.discard_unrun()
    out = stack.base / "cpu.json"
    try:
        with open(stack.logs / "cpu.log", "ab") as log:
            subprocess.run(
                [str(VENV_BIN / "python"), "-m", "bench.cpu", str(out)],
                cwd=ROOT,
                env={
                    **stack.env,
                    "BENCH_TOKEN": stack.token,
                    "BENCH_COORDINATOR_KEY": bench.coordinator_key,
                },
                stdout=log,
                stderr=log,
                check=True,
                timeout=CPU_TIMEOUT_SECONDS,
            )
    finally:
        bench.discard_unrun()
        stack.start_beat()
    figures = json.loads(out.read_text())
    return cpu_rows(figures), figures


# The processes whose memory the table shows, in this order, with their names there.
PROCESS_LABELS = {"web": "web", "worker": "worker", PEER_PROCESS: "Procrastinate worker"}


def memory_rows(snapshots: list[Snapshot]) -> list[Row]:
    """Per process, the RSS of its tree at its first snapshot (idle, before its run) and at its
    largest later one, with that one's ratio to the first. (PSS is in the JSON.)"""
    rows = []
    for process, label in PROCESS_LABELS.items():
        mine = [s for s in snapshots if s.process == process]
        if not mine:
            continue
        first, after = mine[0], largest_after(snapshots, process)
        rss = first.figures["rss MiB"]
        name = f"{label} RSS ({plural(first.figures['processes'], 'process')})"
        rows.append(Row("9 memory", f"{name}, {first.moment}", rss, "MiB"))
        if after is not None:
            later = after.figures["rss MiB"]
            rows.append(Row("9 memory", f"{name}, {after.moment}", later, "MiB", rss))
    return rows


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
    bench.discard_unrun()
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

# The tag and metadata filters: seed_jobs puts team-<n> on 5 % of the jobs and customer <n> on
# 0.1 % (docs/decisions/0130-tags-and-metadata.md).
TAG_READ = "list tag=team-7 (5 %)"
METADATA_READ = "list metadata.customer=42 (0.1 %)"
READS = ("events of one job", "list page 1", f"list page {DEEP_PAGE}", TAG_READ, METADATA_READ)


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
        TAG_READ: f"{base}?page_size={READ_PAGE_SIZE}&tag=team-7",
        METADATA_READ: f"{base}?page_size={READ_PAGE_SIZE}&metadata.customer=42",
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


def plural(count: float, noun: str) -> str:
    """``1 transaction``, ``2 transactions``, ``1 process``, ``5 processes``."""
    ending = "" if count == 1 else "es" if noun.endswith("s") else "s"
    return f"{count:g} {noun}{ending}"


def _create_latency(bench: Bench, session: requests.Session) -> float:
    ms, response = timed(
        partial(
            session.post,
            bench.stack.url("/api/v1/runner-jobs/"),
            json=JOB_BODY,
            headers=bench.auth,
            timeout=30,
        )
    )
    response.raise_for_status()
    return ms


def _bulk_run(
    bench: Bench, session: requests.Session, token: str, action: str, status: str
) -> tuple[dict[str, Any], list[float], list[int]]:
    """One bulk ``action`` on the workspace's ``status`` jobs: the operation as it ended (or the
    timeout left it), the create latencies measured while it ran, the counts as polled."""
    response = session.post(
        bench.stack.url("/api/v1/runner-jobs/bulk/"),
        json={"workspace": BULK_WORKSPACE, "action": action, "filter": {"status": status}},
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    )
    response.raise_for_status()
    location = response.headers["Location"]
    during: list[float] = []
    progress: list[int] = []
    operation = response.json()
    deadline = time.monotonic() + BULK_TIMEOUT_SECONDS
    while operation["status"] == "running" and time.monotonic() < deadline:
        during.append(_create_latency(bench, session))
        operation = session.get(
            location, headers={"Authorization": f"Token {token}"}, timeout=30
        ).json()
        progress.append(operation["succeeded"] + operation["skipped"] + operation["failed"])
    return operation, during, progress


def _bulk_rows(
    action: tuple[str, str], operation: dict[str, Any], during: list[float], before: list[float]
) -> list[Row]:
    """Its rows; ``action`` as (done, doing): ("cancelled", "cancelling")."""
    done_label, doing = action
    done = operation["succeeded"] + operation["skipped"] + operation["failed"]
    ended = operation["finished_at"]
    until = datetime.fromisoformat(ended) if ended else datetime.now(UTC)
    elapsed = (until - datetime.fromisoformat(operation["created_at"])).total_seconds()
    seconds = elapsed if ended else None
    p50_before, p50_during = percentile(before, 50), percentile(during, 50)
    rows = [
        Row(
            "10 bulk operation",
            f"{BULK_JOBS} jobs {done_label}, 202 to finished",
            _round(seconds),
            "s",
            target="< 60 s",
            met=seconds is not None and seconds < 60 and operation["succeeded"] == BULK_JOBS,
        ),
        Row(
            "10 bulk operation",
            f"create p50 while {doing}",
            _round(p50_during),
            "ms",
            _round(p50_before),
            "ratio <= 2",
        ),
        Row(
            "10 bulk operation",
            f"jobs/s {done_label} through the services",
            _round(done / elapsed),
            "jobs/s",
        ),
        Row(
            "10 bulk operation",
            f"create p95 while {doing}",
            _round(percentile(during, 95)),
            "ms",
        ),
    ]
    rows[1].met = rows[1].ratio is not None and rows[1].ratio <= 2
    return rows


def bulk_operation(bench: Bench) -> Result:
    """A bulk cancel of 10 000 queued jobs by filter, then a bulk retry of the same jobs (10 000
    new ones), run by the Procfile worker: each one's time from 202 to finished, and the
    create-job latency while it runs next to just before."""
    stack = bench.stack
    stack.manage(
        "seed_jobs",
        *("--jobs", str(BULK_JOBS), "--events-per-job", "1", "--workspaces", "1", "--append"),
        *("--workspace-prefix", "bulk", "--status", "queued", "--type", "agent-task"),
    )
    token = stack.manage(
        "create_api_token", "bulker", "--workspace", BULK_WORKSPACE, "--role", "member"
    ).strip()
    stack.start_procfile("worker")
    client = redis.Redis(port=stack.redis.port)
    _celery_client(bench).send_task("bench.noop")
    assert wait_until(lambda: _broker_drained(client), 60, 0.05), "the worker did not start"

    session = requests.Session()
    began = time.monotonic()
    before = []
    while time.monotonic() - began < CREATE_BASELINE_SECONDS:
        before.append(_create_latency(bench, session))
    cancel, cancel_during, cancel_progress = _bulk_run(bench, session, token, "cancel", "queued")
    retry, retry_during, retry_progress = _bulk_run(bench, session, token, "retry", "cancelled")
    stack.kill("worker")
    (cancelled, cancel_events, retries, retry_events) = stack.pg.query(
        """
        SELECT (SELECT count(*) FROM runner_jobs_runnerjob j JOIN workspaces_workspace w
                ON w.id = j.workspace_id WHERE w.slug = %(ws)s AND j.status = 'cancelled'),
               (SELECT count(*) FROM job_events_jobevent
                WHERE type = 'job.cancelled' AND payload->>'operation' = %(cancel)s),
               (SELECT count(*) FROM runner_jobs_runnerjob j JOIN workspaces_workspace w
                ON w.id = j.workspace_id WHERE w.slug = %(ws)s AND j.retry_of_id IS NOT NULL),
               (SELECT count(*) FROM job_events_jobevent
                WHERE type = 'job.retried' AND payload->>'operation' = %(retry)s)
        """,
        {"ws": BULK_WORKSPACE, "cancel": cancel["id"], "retry": retry["id"]},
    )[0]
    rows = [
        *_bulk_rows(("cancelled", "cancelling"), cancel, cancel_during, before),
        *_bulk_rows(("retried", "retrying"), retry, retry_during, before),
    ]
    figures = {
        "operations": [cancel, retry],
        "jobs cancelled in the workspace": cancelled,
        "job.cancelled events naming the operation": cancel_events,
        "retries in the workspace": retries,
        "job.retried events naming the operation": retry_events,
        "creates before": latency_figures(before, 50, 95),
        "creates while cancelling": latency_figures(cancel_during, 50, 95),
        "creates while retrying": latency_figures(retry_during, 50, 95),
        "jobs done as polled": {"cancel": cancel_progress, "retry": retry_progress},
        "load average": os.getloadavg(),
    }
    return rows, figures


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _ms(seconds: Any) -> float | None:
    return round(float(seconds) * 1000, 1) if seconds is not None else None


# The seeded rows come last: seed_jobs makes some of them pending, queued or running, and a
# worker (scenario 2) would be handed those by the sweeper in the middle of its measurement.
SCENARIOS = {
    "create API vs bare INSERT": create_api,
    "end to end vs Celery no-op and the peer": end_to_end,
    "racing terminal reports": racing_reports,
    "concurrent reporters": concurrent_reporters,
    "cpu and statements per operation": cpu_per_operation,
    "200 open event streams": event_streams,
    "bulk operation on 10 000 jobs": bulk_operation,
    "fairness between workspaces": flow.fairness,
    "20 keyed jobs": flow.keyed_jobs,
    "reads at 10 k rows": reads_small,
    "reads at 1 M rows": reads_large,
    "admin changelist at 1 M jobs": admin_changelist,
}
