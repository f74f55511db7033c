"""The stream reader threads keep their connection for RUNNER_STREAM_CONN_MAX_AGE, replace it
when obsolete, and drop it after a database error."""

import asyncio
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


def test_a_reader_keeps_its_connection_until_it_is_obsolete(max_age):
    first = read(backend_pid)
    assert read(backend_pid) == first
    time.sleep(1.1)
    assert read(backend_pid) != first


def test_a_database_error_drops_the_connection(max_age):
    read(backend_pid)
    with pytest.raises(DatabaseError):
        read(broken_query)
    assert read(is_connected) is False
