"""Throwaway PostgreSQL and Redis servers on spare ports, for fault injection: stopping,
restarting or killing them touches nothing else on the machine. Used by the chaos and bench
stacks and by the tests that take a server away (database outage, broker down)."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

PG_BIN = Path("/usr/lib/postgresql") / sorted(os.listdir("/usr/lib/postgresql"))[-1] / "bin"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` (exceptions count as False) until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return False


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own in ``base``, trust auth for ``postgres``, on ``port``.
    PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` OS user."""

    def __init__(self, base: Path, port: int = 0, *, dbname: str = "runner_jobs") -> None:
        # Port 0: a free one, chosen again if the start fails. A fixed port in the ephemeral
        # range can be held by any client connection's local end at that moment, and PostgreSQL
        # then cannot bind it ("Address already in use").
        self.port_fixed = bool(port)
        self.port = port or free_port()
        self.dbname = dbname
        self.data = base / "pg"
        self.log = base / "pg.log"
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.data.mkdir()
        if self.as_owner:
            shutil.chown(base, "postgres")
            shutil.chown(self.data, "postgres")
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _pg(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self.as_owner, str(PG_BIN / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            options = (
                f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=300"
            )
            try:
                self._pg(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "120",
                    "start",
                )
                self.port_fixed = True  # a restart must come back where clients look
                return
            except subprocess.CalledProcessError as exc:
                if self.port_fixed or attempt == attempts:
                    log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                    raise RuntimeError(
                        f"PostgreSQL did not start on port {self.port}; its log ends:\n{log}"
                    ) from exc
                self.port = free_port()

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def connect(self, dbname: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname or self.dbname}",
            connect_timeout=3,
            **kwargs,
        )

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cursor = conn.execute(sql, params)
            # Statements without rows (DDL, VACUUM) return an empty list.
            return cursor.fetchall() if cursor.description else []


class ThrowawayRedis:
    """A redis-server of our own on ``port``, without persistence, to stop at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        assert wait_until(client.ping, 10), f"redis-server on port {self.port} did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
