"""The benchmark's own arithmetic: percentiles, wrk's report, the results table."""

from bench.__main__ import table
from bench.load import parse_wrk, percentile
from bench.scenarios import Row

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
