"""The storable check agrees with PostgreSQL itself: for any JSON value (and any text), it finds
a reason exactly when PostgreSQL refuses to store it; and the services refuse such values from
any caller, writing nothing."""

import json
import math
import re

import pytest
from django.db import DataError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner_jobs import services
from runner_jobs.models import JobEvent, RunnerJob
from runner_jobs.storable import unstorable_reason
from tests.factories import WorkspaceFactory, job_in_state

pytestmark = pytest.mark.django_db

EXAMPLES = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Any character, NUL and lone surrogates included (hypothesis leaves surrogates out by default).
CHARACTER = st.one_of(
    st.characters(),
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"]),
)
TEXT = st.lists(CHARACTER, max_size=6).map("".join)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(),  # NaN and both infinities included
    TEXT,
)
JSON_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)


def postgresql_stores(job: RunnerJob, **fields) -> bool:
    """Whether PostgreSQL takes ``fields`` on the job's row (rolled back either way)."""
    try:
        with transaction.atomic():
            RunnerJob.objects.filter(pk=job.pk).update(**fields)
            transaction.set_rollback(True)
    except (DataError, ValueError):
        return False
    return True


@pytest.fixture
def job():
    return job_in_state("completed", workspace=WorkspaceFactory())


def has_surrogates(value) -> bool:
    return re.search("[\ud800-\udfff]", json.dumps(value, ensure_ascii=False)) is not None


@given(value=JSON_VALUE)
@EXAMPLES
def test_json_the_check_passes_is_json_postgresql_stores(job, value):
    """What the check passes, PostgreSQL stores (never a 500); what it refuses, PostgreSQL
    refuses too, or it is not Unicode text: a Python string holding a surrogate pair, which
    jsonb would store as another string (the pair joined into one character)."""
    reason = unstorable_reason(value)
    stored = postgresql_stores(job, result=value)
    assert stored if reason is None else (not stored or has_surrogates(value)), reason


@given(text=TEXT)
@EXAMPLES
def test_text_the_check_passes_is_exactly_text_postgresql_stores(job, text):
    assert (unstorable_reason(text) is None) == postgresql_stores(job, error=text)


def test_the_reason_names_the_place():
    assert unstorable_reason({"a": [1, {"b": math.inf}]}, path="result") == (
        'result["a"][1]["b"]: is not a finite number (JSON has no infinity or NaN).'
    )
    assert (
        unstorable_reason({1: "x\x00"})
        == "$[1]: contains U+0000 (NUL), which PostgreSQL cannot store."
    )
    assert unstorable_reason([[[]]], max_depth=2) == "$: nests deeper than 2 levels."


# --- The services refuse them from any caller --------------------------------------------------


def test_a_create_with_an_unstorable_payload_writes_nothing():
    with pytest.raises(services.JobInputError) as refused:
        services.job_create(
            workspace=WorkspaceFactory(),
            spec=services.JobSpec(type="echo", payload={"k": "\ud800"}),
            actor="system",
        )
    assert list(refused.value.errors) == ["payload"]
    assert not RunnerJob.objects.exists()
    assert not JobEvent.objects.exists()


def test_an_unstorable_event_payload_or_result_changes_nothing():
    job = job_in_state("running", type="agent-task", workspace=WorkspaceFactory())
    version = job.version
    with pytest.raises(services.JobInputError) as refused:
        services.event_append(
            job_id=job.pk, type="agent.note", payload={"k": math.nan}, actor="system"
        )
    assert list(refused.value.errors) == ["payload"]
    with pytest.raises(services.JobInputError) as refused:
        services.job_complete(job_id=job.pk, result=["ok", "\x00"], actor="system")
    assert refused.value.errors == {
        "result": ["result[1]: contains U+0000 (NUL), which PostgreSQL cannot store."]
    }
    job.refresh_from_db()
    assert (job.status, job.version, job.result) == ("running", version, None)
    assert JobEvent.objects.filter(job=job).count() == version
