"""``python -m bench [name ...]``: run the benchmark scenarios (all, or those whose names contain
one of the given words) against a throwaway production-mode stack, print a table of figures,
baselines, ratios and targets, and write it all as JSON to ``bench/results/<timestamp>.json``.

For people, not CI: it takes several minutes and the whole machine.
"""

import dataclasses
import json
import os
import signal
import sys
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import wrk_available
from bench.scenarios import SCENARIOS, Bench, Row, memory_rows
from chaos.stack import Stack, procfile_command

RESULTS = Path(__file__).resolve().parent / "results"

# 0 (the default): ports free when the stack starts, as the chaos suite's, so the two (or two
# checkouts) can run side by side and no client connection's local end can hold a fixed one.
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "0"))
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "0"))
WEB_PORT = int(os.environ.get("BENCH_WEB_PORT", "0"))


def bench_stack() -> Stack:
    stack = Stack(
        name="bench",
        pg_port=PG_PORT,
        redis_port=REDIS_PORT,
        web_port=WEB_PORT,
        settings_module="bench.settings",
        extra_env={
            "SECRET_KEY": uuid.uuid4().hex * 2,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # The create-job runs leave their jobs queued with no worker and their messages
            # flushed; the sweeper must not send them again into a later scenario's figures.
            # It still dispatches pending jobs and recovers expired leases as usual.
            "RUNNER_REDISPATCH_AFTER_SECONDS": "3600",
        },
    )
    stack.env["BENCH_STATIC_ROOT"] = str(stack.base / "static")
    return stack


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def table(rows: list[Row]) -> str:
    header = ["scenario", "measure", "value", "unit", "baseline", "ratio", "target", "met"]
    cells = [
        [
            r.scenario,
            r.measure,
            _cell(r.value),
            r.unit,
            _cell(r.baseline),
            _cell(r.ratio),
            r.target or "-",
            _cell(r.met),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    # A Markdown table, so a run's output pastes straight into docs/benchmarks.md.
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells)])


def main(selected: list[str]) -> int:
    if not wrk_available():
        print("bench needs wrk (a C HTTP load generator): apt-get install wrk", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "started": started.isoformat(),
        "cpus": os.cpu_count(),
        "load average before": os.getloadavg(),
        "web": procfile_command("web"),
        "worker": procfile_command("worker"),
        "scenarios": {},
    }
    rows: list[Row] = []
    failed = 0
    # A plain kill still tears the stack down (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = bench_stack()
    try:
        stack.up()
        bench = Bench(stack)
        bench.prepare()
        bench.remember_memory("web", "idle before the run")
        for name, scenario in SCENARIOS.items():
            if selected and not any(s.lower() in name.lower() for s in selected):
                continue
            print(f"... {name}", flush=True)
            began = time.monotonic()
            try:
                scenario_rows, figures = scenario(bench)
            except Exception:
                failed += 1
                scenario_rows, figures = [], {"error": traceback.format_exc(limit=4)}
                print(figures["error"], file=sys.stderr, flush=True)
            rows += scenario_rows
            figures["seconds"] = round(time.monotonic() - began, 1)
            report["scenarios"][name] = figures
            print("    " + json.dumps(figures, default=str), flush=True)
            bench.remember_memory("web", f"after {name}")
        rows += memory_rows(bench.memory)
        report["memory"] = [dataclasses.asdict(s) for s in bench.memory]
    finally:
        if failed:
            for log in sorted(stack.logs.glob("*.log")):
                print(f"--- tail of {log.name}")
                print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        stack.down()
    report["load average after"] = os.getloadavg()
    report["rows"] = [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(table(rows))
    print(f"\n{len(rows)} figures, {failed} scenarios failed to run; written to {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
