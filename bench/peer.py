"""The benchmark's peer: Procrastinate (a PostgreSQL job queue with a Django integration) draining
no-op jobs on the bench stack's PostgreSQL cluster, next to the Celery no-op drain.

Its worker is a process of its own (``manage.py procrastinate worker`` of a Django project that
is only ``bench.peer_settings``), on a database of its own, at the concurrency of the Procfile's
worker line. The jobs are deferred one by one from the bench process by a plain Procrastinate
app, as the Celery baseline publishes its tasks one by one."""

import re
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import procrastinate

from bench.peer_tasks import PEER_NOOP
from chaos.servers import wait_until
from chaos.stack import ROOT, VENV_BIN, Stack

PEER_DATABASE = "bench_peer"
PEER_SETTINGS = "bench.peer_settings"
PEER_PROCESS = "peer-worker"
DEFAULT_WORKER_CONCURRENCY = 4


def worker_concurrency(command: str, env: Mapping[str, str]) -> int:
    """The ``--concurrency`` of a worker command line as the shell would expand it: a number, or
    ``${NAME:-default}`` / ``$NAME`` / ``${NAME}`` read from ``env``."""
    match = re.search(r"--concurrency[ =](\S+)", command)
    if match is None:
        return DEFAULT_WORKER_CONCURRENCY
    word = match.group(1)
    variable = re.fullmatch(r"\$\{(\w+)(?::-(\w*))?\}|\$(\w+)", word)
    if variable is None:
        return int(word)
    name = variable.group(1) or variable.group(3)
    value = env.get(name) or variable.group(2)
    return int(value) if value else DEFAULT_WORKER_CONCURRENCY


class Peer:
    """Procrastinate on ``stack``: its database, its worker and a client deferring jobs."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.url = f"postgres://postgres@127.0.0.1:{stack.pg.port}/{PEER_DATABASE}"
        self.env = {
            **stack.env,
            "DJANGO_SETTINGS_MODULE": PEER_SETTINGS,
            "BENCH_PEER_DATABASE_URL": self.url,
        }
        self.app = procrastinate.App(
            connector=procrastinate.SyncPsycopgConnector(conninfo=self.url)
        )

    def django(self, *args: str) -> str:
        """``django-admin <args>`` in the peer's Django project."""
        return subprocess.run(
            [str(VENV_BIN / "python"), "-m", "django", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def prepare(self) -> None:
        """Its database, and its schema from the integration's own Django migrations."""
        with self.stack.pg.connect("postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PEER_DATABASE}")
            conn.execute(f"CREATE DATABASE {PEER_DATABASE}")
        self.django("migrate", "--noinput")

    def start_worker(self, concurrency: int) -> None:
        # The stack's own bookkeeping (log file, kill), with the peer's settings given through
        # env(1), which execs: the stack's process is the worker itself, as for Celery's.
        self.stack._spawn(
            PEER_PROCESS,
            [
                "env",
                f"DJANGO_SETTINGS_MODULE={PEER_SETTINGS}",
                f"BENCH_PEER_DATABASE_URL={self.url}",
                str(VENV_BIN / "python"),
                "-m",
                "django",
                "procrastinate",
                "worker",
                "--concurrency",
                str(concurrency),
            ],
        )

    def stop_worker(self) -> None:
        self.stack.kill(PEER_PROCESS)

    def defer(self, count: int) -> None:
        with self.app.open():
            deferrer = self.app.configure_task(PEER_NOOP)
            for _ in range(count):
                deferrer.defer()

    def counts(self) -> dict[str, int]:
        """Jobs by status."""
        with self.stack.pg.connect(PEER_DATABASE) as conn:
            rows = conn.execute(
                "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status"
            ).fetchall()
        return {status: count for status, count in rows}

    def drained(self) -> bool:
        counts = self.counts()
        return counts.get("todo", 0) == 0 and counts.get("doing", 0) == 0

    def wait_drained(self, timeout: float) -> bool:
        return wait_until(self.drained, timeout, 0.02)

    def drain(self, count: int, timeout: float = 300) -> dict[str, Any]:
        """Defer ``count`` no-op jobs while the worker runs; jobs/s from the first defer until
        none is left to do (as the Celery baseline: publish, then poll until drained)."""
        before = self.counts().get("succeeded", 0)
        began = time.monotonic()
        self.defer(count)
        deferred = time.monotonic() - began
        if not self.wait_drained(timeout):
            raise AssertionError(f"Procrastinate did not drain {count} jobs in {timeout} s")
        elapsed = time.monotonic() - began
        counts = self.counts()
        return {
            "jobs": count,
            "defer s": round(deferred, 2),
            "jobs/s": round(count / elapsed, 1),
            "succeeded": counts.get("succeeded", 0) - before,
            "jobs by status": counts,
        }
