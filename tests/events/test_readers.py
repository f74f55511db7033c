"""The stream reader threads keep their connection for RUNNER_STREAM_CONN_MAX_AGE, replace it
when obsolete, and drop it after a database error."""

import asyncio
import threading
import time

import pytest
from django.db import DatabaseError, connection

from job_events.readers import stream_db

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def broken_query() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")


def is_connected() -> bool:
    return connection.connection is not None


def read(fn, /, **kwargs):
    return asyncio.run(stream_db(fn, **kwargs))


@pytest.fixture
def max_age(settings):
    settings.RUNNER_STREAM_CONN_MAX_AGE = 1
    yield settings
    # Leave no connection behind on the reader threads (the test database is dropped later).
    settings.RUNNER_STREAM_CONN_MAX_AGE = 0
    for _ in range(8):
        read(is_connected)


def pid_here() -> tuple[int, int]:
    return threading.get_ident(), backend_pid()


def pid_on(thread: int) -> int:
    """The backend pid of a read that ran on reader thread ``thread`` (the pool has several)."""
    for _ in range(100):
        ran_on, pid = read(pid_here)
        if ran_on == thread:
            return pid
    raise AssertionError("no read ran on that reader thread")


def test_a_reader_keeps_its_connection_until_it_is_obsolete(max_age):
    thread, first = read(pid_here)
    assert pid_on(thread) == first
    time.sleep(1.1)
    assert pid_on(thread) != first


def connected_here() -> tuple[int, bool]:
    return threading.get_ident(), is_connected()


def test_a_database_error_drops_the_connection(max_age):
    failed_on: list[int] = []

    def broken_here() -> None:
        failed_on.append(threading.get_ident())
        broken_query()

    read(backend_pid)
    with pytest.raises(DatabaseError):
        read(broken_here)
    # The pool has several threads: look at the one whose query failed.
    for _ in range(100):
        thread, connected = read(connected_here)
        if thread == failed_on[0]:
            break
    assert thread == failed_on[0]
    assert connected is False
