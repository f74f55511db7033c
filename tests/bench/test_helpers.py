"""The benchmark's own arithmetic: percentiles, wrk's report, the results table, the figures of
the reporters, CPU and memory rows, the worker's concurrency, transactions in captured SQL."""

from bench.__main__ import table
from bench.cpu import transactions
from bench.load import parse_wrk, percentile
from bench.memory import Snapshot, largest_after
from bench.peer import PEER_PROCESS, worker_concurrency
from bench.scenarios import (
    Report,
    Row,
    cpu_rows,
    memory_rows,
    plural,
    reporter_figures,
    reporter_progress,
)

WRK_REPORT = """Running 10s test @ http://127.0.0.1:58001/api/v1/runner-jobs/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   112.45ms   40.12ms 501.00ms   70.00%
    Req/Sec   140.10     30.00   200.00     65.00%
  Latency Distribution
     50%  105.20ms
     75%  130.00ms
     90%  160.50ms
     99%    1.20s
  2801 requests in 10.01s, 1.20MB read
  Socket errors: connect 0, read 1, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:    279.82
Transfer/sec:    122.00KB
"""


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_parse_wrk_reads_rate_errors_and_latency_units() -> None:
    result = parse_wrk(WRK_REPORT)
    assert result.requests_per_second == 279.82
    assert result.requests == 2801
    assert result.errors == 5 + 1 + 3
    assert result.latency_ms == {"p50": 105.2, "p90": 160.5, "p99": 1200.0}


def test_parse_wrk_without_errors() -> None:
    report = WRK_REPORT.replace("  Non-2xx or 3xx responses: 5\n", "").replace(
        "  Socket errors: connect 0, read 1, write 0, timeout 3\n", ""
    )
    assert parse_wrk(report).errors == 0


def test_row_ratio_and_table() -> None:
    rows = [
        Row("1 create API", "create-job requests/s", 50.0, "req/s", 200.0, "ratio >= 0.6", False),
        Row("3 racing reports", "complete p50", None, "ms"),
    ]
    assert rows[0].ratio == 0.25
    assert rows[1].ratio is None
    lines = table(rows).splitlines()
    assert lines[0].split("|")[1:-1] == [
        " scenario         ",
        " measure               ",
        " value ",
        " unit  ",
        " baseline ",
        " ratio ",
        " target       ",
        " met ",
    ]
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == [
        "1 create API",
        "create-job requests/s",
        "50.0",
        "req/s",
        "200.0",
        "0.25",
        "ratio >= 0.6",
        "NO",
    ]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == [
        "3 racing reports",
        "complete p50",
        "-",
        "ms",
        "-",
        "-",
        "-",
        "-",
    ]


def test_worker_concurrency_expands_the_shell_default() -> None:
    line = "celery -A config worker --concurrency ${WORKER_CONCURRENCY:-4} --hostname w@%h"
    assert worker_concurrency(line, {}) == 4
    assert worker_concurrency(line, {"WORKER_CONCURRENCY": "7"}) == 7
    assert worker_concurrency(line, {"WORKER_CONCURRENCY": ""}) == 4  # :- covers empty too
    assert worker_concurrency("celery worker --concurrency=3", {}) == 3
    assert worker_concurrency("celery worker --concurrency $N", {"N": "2"}) == 2
    assert worker_concurrency("celery worker --concurrency ${N}", {"N": "5"}) == 5
    assert worker_concurrency("celery worker", {}) == 4


def test_transactions_counts_blocks_and_lone_writes() -> None:
    create = [
        'SELECT "knox_authtoken"."digest" FROM "knox_authtoken"',
        "BEGIN",
        'INSERT INTO "runner_jobs_runnerjob" ("id") VALUES (1)',
        "COMMIT",
        'SELECT "job_events_webhookendpoint"."id" FROM "job_events_webhookendpoint"',
        "BEGIN",
        'SAVEPOINT "s1"',
        'UPDATE "runner_jobs_runnerjob" SET "status" = \'queued\'',
        'RELEASE SAVEPOINT "s1"',
        "COMMIT",
    ]
    assert transactions(create) == 2
    one_statement = [
        'SELECT "knox_authtoken"."digest" FROM "knox_authtoken"',
        "WITH job AS (INSERT INTO runner_jobs_runnerjob (id) VALUES (1) RETURNING id) "
        "INSERT INTO job_events_jobevent (job_id) SELECT id FROM job",
    ]
    assert transactions(one_statement) == 1
    # A read in autocommit, or one mentioning "update" in a value, is no transaction; a
    # rolled-back block still is one.
    reads = ["SELECT 1", "WITH x AS (SELECT 'update me set' AS s) SELECT s FROM x", ""]
    assert transactions(reads) == 0
    assert transactions(["BEGIN", "SELECT 1 FOR UPDATE", "ROLLBACK"]) == 1
    assert transactions(["UPDATE t SET a = 1", "DELETE FROM t"]) == 2


def test_reporter_figures() -> None:
    reports = [
        Report("progress", 40, 200, None, 10.0, 10.1),
        Report("events", 1, 201, None, 10.05, 10.2),
        Report("progress", 90, 409, "concurrent_update", 10.1, 10.3),
        Report("progress", 70, 200, None, 10.2, 10.4),
        Report("events", 3, 409, "concurrent_update", 10.3, 10.5),
    ]
    figures = reporter_figures(reports)
    assert figures["accepted"] == 3
    assert figures["accepted progress"] == 2
    assert figures["accepted events"] == 1
    assert figures["refused"] == 2
    assert figures["refused by status and code"] == {"409 concurrent_update": 2}
    assert figures["seconds"] == 0.5
    assert figures["accepted reports/s"] == 6.0
    # The refused 90 does not count: the stored progress must be the highest accepted one.
    assert figures["highest accepted progress"] == 70
    assert reporter_figures([])["accepted reports/s"] is None


def test_plural() -> None:
    assert [plural(n, "transaction") for n in (0, 1, 2)] == [
        "0 transactions",
        "1 transaction",
        "2 transactions",
    ]
    assert [plural(n, "process") for n in (1, 5)] == ["1 process", "5 processes"]
    assert plural(1.5, "transaction") == "1.5 transactions"  # a median of two counts


def test_reporter_progress_stays_in_range_and_out_of_order() -> None:
    values = [reporter_progress(n, i) for n in range(10) for i in range(0, 30, 2)]
    assert all(0 <= v <= 100 for v in values)
    assert values != sorted(values)
    assert len(set(values)) > 50


def test_cpu_rows_against_the_goals() -> None:
    op = {"cpu ms": 4.0, "statements": 6, "transactions": 1}
    figures = {
        "healthz": {"cpu ms": 0.5, "statements": 0, "transactions": 0},
        "create": op,
        "worker echo job": {**op, "cpu ms": 5.5, "transactions": 2},
    }
    rows = {r.measure: r for r in cpu_rows(figures)}
    assert list(rows) == [
        "healthz: CPU",
        "healthz: SQL statements, 0 transactions",
        "create: CPU",
        "create: SQL statements, 1 transaction",
        "worker echo job: CPU",
        "worker echo job: SQL statements, 2 transactions",
    ]
    create_cpu = rows["create: CPU"]
    assert (create_cpu.baseline, create_cpu.ratio, create_cpu.met) == (0.5, 8.0, True)
    assert rows["create: SQL statements, 1 transaction"].target == "<= 6, <= 1 transaction"
    assert rows["create: SQL statements, 1 transaction"].met is True
    assert rows["worker echo job: CPU"].met is False
    assert rows["worker echo job: CPU"].baseline is None
    assert rows["worker echo job: SQL statements, 2 transactions"].met is True
    assert rows["healthz: CPU"].met is None
    two = cpu_rows({"create": {**op, "transactions": 2}})
    assert two[1].met is False


def test_memory_rows_first_and_largest_later_snapshot() -> None:
    def snap(process: str, moment: str, rss: float, processes: int = 3) -> Snapshot:
        return Snapshot(process, moment, {"rss MiB": rss, "processes": processes})

    snapshots = [
        snap("web", "idle before the run", 200.0),
        snap(PEER_PROCESS, "idle before its run", 50.0, processes=1),
        snap("web", "after create", 260.0),
        snap("worker", "idle before its run", 400.0),
        snap("web", "after streams", 210.0),
    ]
    assert largest_after(snapshots, "web") == snapshots[2]
    assert largest_after(snapshots, "worker") is None
    rows = memory_rows(snapshots)
    assert [(r.measure, r.value, r.baseline) for r in rows] == [
        ("web RSS (3 processes), idle before the run", 200.0, None),
        ("web RSS (3 processes), after create", 260.0, 200.0),
        ("worker RSS (3 processes), idle before its run", 400.0, None),
        ("Procrastinate worker RSS (1 process), idle before its run", 50.0, None),
    ]
    assert rows[1].ratio == 1.3
