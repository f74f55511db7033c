"""A throwaway stack for fault injection: its own PostgreSQL cluster and Redis server on spare
ports, and the service's own processes (gunicorn web, Celery workers, beat) started from the
Procfile's commands. Killing, stopping and restarting any of them touches nothing else on the
machine. The benchmarks (``bench/``) run on the same stack, with their own ports and settings."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from chaos.servers import ThrowawayPostgres, ThrowawayRedis, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

# 0 (the default): a port that is free when the stack starts, so a leftover server of an
# earlier run (or anything else) on a fixed port cannot stop the suite.
PG_PORT = int(os.environ.get("CHAOS_PG_PORT", "0"))
REDIS_PORT = int(os.environ.get("CHAOS_REDIS_PORT", "0"))
WEB_PORT = int(os.environ.get("CHAOS_WEB_PORT", "0"))

LEASE_SECONDS = 6
SWEEP_SECONDS = 2
REDISPATCH_SECONDS = 4

# What the chaos scenarios change: short leases and sweeps so recoveries happen within seconds,
# and the poison job type.
CHAOS_ENV = {
    "DEBUG": "false",
    "RUNNER_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    "RUNNER_SWEEP_INTERVAL_SECONDS": str(SWEEP_SECONDS),
    "RUNNER_REDISPATCH_AFTER_SECONDS": str(REDISPATCH_SECONDS),
    "RUNNER_RETRY_BACKOFF_SECONDS": "1",
    # Below the lease: a worker frozen inside a transaction loses its row lock before its lease.
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "4",
    "RUNNER_JOB_TYPES": json.dumps(
        {"poison": {"handler": "chaos.handlers.poison", "max_attempts": 3}}
    ),
}


def procfile_command(process: str) -> str:
    """The Procfile's command line for ``process`` (run through a shell, as honcho does), so the
    stack runs exactly what production runs."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == process:
            return command.strip()
    raise KeyError(f"no {process!r} line in the Procfile")


class Stack:
    """PostgreSQL, Redis, web, workers and beat for one run (chaos by default)."""

    def __init__(
        self,
        *,
        name: str = "chaos",
        pg_port: int = PG_PORT,
        redis_port: int = REDIS_PORT,
        web_port: int = WEB_PORT,
        settings_module: str = "config.settings.local",
        extra_env: dict[str, str] = CHAOS_ENV,
    ) -> None:
        self.name = name
        redis_port, web_port = (p or free_port() for p in (redis_port, web_port))
        self.web_port = web_port
        self.base = Path(tempfile.mkdtemp(prefix=f"runner-{name}-"))
        self.logs = self.base / "logs"
        self.logs.mkdir()
        self.pg = ThrowawayPostgres(self.base, pg_port)
        self.redis = ThrowawayRedis(redis_port)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "DATABASE_URL": self.pg.url,
            "REDIS_URL": self.redis.url,
            "HOST": "127.0.0.1",
            "PORT": str(web_port),
            "RUNNER_API_QUOTA": "1000000/hour",
            # The stream benchmark opens hundreds of streams with one token.
            "RUNNER_STREAM_MAX_PER_TOKEN": "0",
            "CELERY_BEAT_SCHEDULE_FILENAME": str(self.base / "beat-schedule"),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        self.token = ""

    # --- lifecycle -------------------------------------------------------------------------

    def up(self) -> None:
        self.pg.start()
        self.env["DATABASE_URL"] = self.pg.url  # the port is known once it has started
        self.redis.start()
        self.manage("ensure_database")
        self.manage("migrate", "--noinput")
        self.token = self.manage(
            "create_api_token", self.name, "--workspace", self.name, "--role", "member"
        ).strip()
        self.start_web()
        self.start_beat()

    def down(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGKILL)
        self.redis.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def start_procfile(self, process: str, name: str | None = None) -> None:
        """Run the Procfile's ``process`` line as it stands, with the stack's environment."""
        self._spawn(name or process, ["bash", "-c", f"exec {procfile_command(process)}"])

    def start_web(self) -> None:
        self.start_procfile("web")
        assert wait_until(lambda: requests.get(self.url("/healthz"), timeout=2).ok, 30), (
            "web did not start"
        )

    def start_beat(self) -> None:
        self.start_procfile("beat")

    def start_worker(self, name: str, concurrency: int, pool: str = "prefork") -> None:
        self._spawn(
            name,
            [
                str(VENV_BIN / "celery"),
                "-A",
                "config",
                "worker",
                "--loglevel",
                "INFO",
                "--hostname",
                f"{name}@{self.name}",
                "--concurrency",
                str(concurrency),
                "--pool",
                pool,
                "--without-gossip",
                "--without-mingle",
            ],
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a process and all its children (its own session/process group)."""
        proc = self.procs[name] if sig != signal.SIGKILL else self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait(10)

    # --- API -------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def create_job(self, type: str, payload: dict[str, Any], **extra: Any) -> requests.Response:
        return requests.post(
            self.url("/api/v1/runner-jobs/"),
            json={"workspace": self.name, "type": type, "payload": payload, **extra},
            headers={"Authorization": f"Token {self.token}"},
            timeout=10,
        )

    def statuses(self, ids: list[str]) -> dict[str, int]:
        rows = self.pg.query(
            "SELECT status, count(*) FROM runner_jobs_runnerjob WHERE id = ANY(%s::uuid[]) "
            "GROUP BY status",
            [ids],
        )
        return {status: count for status, count in rows}

    def wait_terminal(self, ids: list[str], timeout: float) -> float | None:
        """Seconds until every job in ``ids`` is terminal, or None on timeout."""
        start = time.monotonic()
        terminal = {"completed", "failed", "cancelled"}

        def done() -> bool:
            counts = self.statuses(ids)
            return sum(counts.get(s, 0) for s in terminal) == len(ids)

        return time.monotonic() - start if wait_until(done, timeout, 0.5) else None
