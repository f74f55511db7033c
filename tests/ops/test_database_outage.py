"""PostgreSQL goes away under a running server and comes back: the API answers 503 (never 500,
never a hang) while it is gone, and succeeds again without a restart of the server.

The PostgreSQL here is a throwaway cluster of our own on a spare port (the shared one serves
other test runs); the server is gunicorn in production mode, as the Procfile runs it."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from chaos.servers import PG_BIN, ThrowawayPostgres
from tests.ops.conftest import port_wait

ROOT = Path(__file__).resolve().parents[2]
WEB_PORT = 8096

pytestmark = pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="needs PostgreSQL 15")


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="runner-jobs-pg-"))
    pg = ThrowawayPostgres(directory, dbname="runner_jobs_outage")
    pg.start()
    try:
        with pg.connect("postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE runner_jobs_outage")
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def production_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="outage-test-" + "k" * 50,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="False",
        DATABASE_URL=database_url,
    )
    return env


@pytest.fixture(scope="module")
def server(cluster: ThrowawayPostgres) -> Iterator[dict[str, str]]:
    env = production_env(cluster.url)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    token = subprocess.run(
        [
            *manage,
            "shell",
            "-v",
            "0",
            "-c",
            "from django.contrib.auth.models import User; from knox.models import AuthToken; "
            "print(AuthToken.objects.create(User.objects.create(username='ops'))[1])",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    log = open(cluster.data.parent / "gunicorn.log", "w")  # noqa: SIM115
    web = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{WEB_PORT}",
            "--worker-class",
            "gthread",
            "--workers",
            "1",
            "--threads",
            "4",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port_wait(WEB_PORT, up=True, timeout=30)
        # The app is loaded on the first request; an authenticated one also opens connections.
        assert (
            requests.get(
                f"http://127.0.0.1:{WEB_PORT}/api/v1/runner-jobs/",
                headers={"Authorization": f"Token {token}"},
                timeout=30,
            ).status_code
            == 200
        )
        yield {"Authorization": f"Token {token}"}
    finally:
        web.terminate()
        web.wait(timeout=30)
        log.close()


@dataclass
class Outcome:
    started: float
    status: int | str
    seconds: float


def hammer(headers: dict[str, str], stop: threading.Event, outcomes: list[Outcome]) -> None:
    session = requests.Session()
    while not stop.is_set():
        started = time.monotonic()
        try:
            status: int | str = session.get(
                f"http://127.0.0.1:{WEB_PORT}/api/v1/runner-jobs/", headers=headers, timeout=10
            ).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        outcomes.append(Outcome(started, status, time.monotonic() - started))
        time.sleep(0.02)


def get(path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{WEB_PORT}{path}", timeout=10)


def test_api_answers_503_while_postgresql_is_down_and_recovers_by_itself(cluster, server):
    outcomes: list[Outcome] = []
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(server, stop, outcomes)) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        down_at = time.monotonic()
        cluster.stop()
        time.sleep(2)
        ready = get("/readyz")
        alive = get("/healthz")
        scraped = get("/metrics")
        cluster.start()
        up_at = time.monotonic()
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    before = [o for o in outcomes if o.started + o.seconds < down_at]
    during = [o for o in outcomes if down_at <= o.started < up_at]
    after = [o for o in outcomes if o.started >= up_at]
    assert before and during and after, outcomes
    assert {o.status for o in before} == {200}
    # While it is down: 503 (or a request that squeezed in before the stop took effect).
    assert {o.status for o in during} <= {200, 503}, [o.status for o in during]
    assert 503 in {o.status for o in during}
    # No request hangs: the connect timeout is 3 s.
    assert max(o.seconds for o in outcomes) < 4
    # Back: every request succeeds, with no restart of the server.
    assert {o.status for o in after} == {200}, [o.status for o in after]
    print(
        f"outage: {len(before)} before, {len(during)} during "
        f"({sum(o.status == 503 for o in during)} x 503), {len(after)} after; "
        f"slowest {max(o.seconds for o in outcomes) * 1000:.0f} ms"
    )

    assert ready.status_code == 503
    assert ready.json()["detail"] == "Unavailable: database."
    assert alive.status_code == 200
    # The scrape still works (request metrics matter most now), saying the database is down.
    assert scraped.status_code == 200
    assert "runner_jobs_database_up 0.0" in scraped.text
    assert get("/readyz").status_code == 200


def test_a_503_says_why_in_the_api_error_shape(cluster, server):
    cluster.stop()
    try:
        response = requests.get(
            f"http://127.0.0.1:{WEB_PORT}/api/v1/runner-jobs/", headers=server, timeout=10
        )
    finally:
        cluster.start()
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The database is unavailable; try again shortly.",
        "code": "unavailable",
    }
    assert response.headers["Retry-After"] == "5"
    assert response.headers["X-Request-ID"]
