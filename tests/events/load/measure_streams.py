"""Load check of the event stream (not a test; run by hand against a running server).

Opens N streams on N running external jobs, measures event-to-stream latency (an event is
written through the services with its write time in the payload; the stream's receive time
minus that), runs ``wrk`` against the job detail endpoint while the streams are held open,
counts the server's database connections, then ends every job and checks every stream closed.
Start the server with ``RUNNER_STREAM_MAX_PER_TOKEN=0`` (or at least N): one token opens them all.

    DATABASE_URL=postgres://localhost:5432/runner_jobs_e REDIS_URL=redis://localhost:6379/5 \\
    DJANGO_SETTINGS_MODULE=config.settings.local \\
    .venv/bin/python tests/events/load/measure_streams.py --base http://127.0.0.1:8005 \\
        --token <knox token> --workspace load --streams 200
"""

import argparse
import asyncio
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
# A load script: its few setup queries may run on the event loop thread.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

import django

django.setup()

import httpx  # noqa: E402
from django.db import connection  # noqa: E402

from runner_jobs import services  # noqa: E402
from workspaces.models import Workspace  # noqa: E402


def wrk(url: str, token: str, seconds: int) -> tuple[float, str]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c16",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Token {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+(\S+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    extra = f"p50 {p50.group(1) if p50 else '?'}"
    if non2xx:
        extra += f", non-2xx {non2xx.group(1)}"
    if errors:
        extra += f", {errors.group(0)}"
    return rps, extra


def server_connections(dbname: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )
        return cursor.fetchone()[0]


def tick(job_id: Any) -> None:
    """One event, stamped with the time just before it is written."""
    services.event_append(
        job_id=job_id, type="load.tick", payload={"t0": time.time()}, actor="load"
    )


async def follow(client, url, token, state, job_id) -> None:
    headers = {"Authorization": f"Token {token}"}
    async with client.stream("GET", url, headers=headers) as response:
        state["status"][job_id] = response.status_code
        frame = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                state["keepalives"] += 1
            elif line:
                name, _, value = line.partition(": ")
                frame[name] = value
            elif frame:
                state["opened"].add(job_id)
                data = json.loads(frame["data"])
                sent = data["payload"].get("t0")
                if sent is not None:
                    state["latencies"].append(time.time() - sent)
                frame = {}
    state["closed"].add(job_id)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="http://127.0.0.1:8005")
    parser.add_argument("--token", required=True)
    parser.add_argument("--workspace", default="load")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--wrk-seconds", type=int, default=15)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    workspace = Workspace.objects.get(slug=args.workspace)
    probe = services.job_create(
        workspace=workspace, spec=services.JobSpec(type="agent-task", payload={}), actor="load"
    ).job
    detail = f"{args.base}/api/v1/runner-jobs/{probe.pk}/"
    if not args.skip_baseline:
        rps, extra = wrk(detail, args.token, args.wrk_seconds)
        print(f"API without streams: {rps:.0f} req/s ({extra})", flush=True)

    jobs = [
        services.job_create(
            workspace=workspace, spec=services.JobSpec(type="agent-task", payload={}), actor="load"
        ).job
        for _ in range(args.streams)
    ]
    state: dict[str, Any] = {
        "opened": set(),
        "closed": set(),
        "status": {},
        "latencies": [],
        "keepalives": 0,
    }
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30), limits=limits) as client:
        tasks = [
            asyncio.create_task(
                follow(
                    client,
                    f"{args.base}/api/v1/runner-jobs/{j.pk}/events/stream/",
                    args.token,
                    state,
                    j.pk,
                )
            )
            for j in jobs
        ]
        started = time.monotonic()
        while len(state["opened"]) < len(jobs) and time.monotonic() - started < 60:
            await asyncio.sleep(0.2)
        print(
            f"streams open: {len(state['opened'])}/{len(jobs)} "
            f"in {time.monotonic() - started:.1f}s",
            flush=True,
        )

        loop = asyncio.get_running_loop()
        for k in range(args.events):
            job = jobs[k % len(jobs)]
            await loop.run_in_executor(None, functools.partial(tick, job.pk))
            await asyncio.sleep(0.02)
        await asyncio.sleep(1)
        lat = sorted(state["latencies"])
        if lat:
            q = statistics.quantiles(lat, n=100)
            print(
                f"event-to-stream latency over {len(lat)} events: p50 {q[49] * 1000:.1f} ms, "
                f"p95 {q[94] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms",
                flush=True,
            )

        dbname = connection.settings_dict["NAME"]
        print(
            f"server database connections with streams open: "
            f"{await loop.run_in_executor(None, server_connections, dbname)}",
            flush=True,
        )
        rps, extra = await loop.run_in_executor(None, wrk, detail, args.token, args.wrk_seconds)
        print(
            f"API with {len(state['opened'])} streams open: {rps:.0f} req/s ({extra})", flush=True
        )

        for job in [probe, *jobs]:
            await loop.run_in_executor(
                None, functools.partial(services.job_cancel, job_id=job.pk, actor="load")
            )
        await asyncio.wait(tasks, timeout=30)
        print(
            f"streams closed by the server after their job ended: "
            f"{len(state['closed'])}/{len(jobs)}; keep-alives seen: {state['keepalives']}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
