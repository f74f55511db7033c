"""Hostile and careless input, as families (hypothesis): every malformed request is a 4xx in the
API's error shape and writes nothing. Any header byte that is not UTF-8 text, any JSON value
PostgreSQL cannot hold in any field a client's JSON is stored in, a NUL in any query."""

import json

import pytest
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from job_events.models import WebhookEndpoint
from runner_jobs import services
from runner_jobs.models import JobEvent, JobStep, RunnerJob
from tests.admin.conftest import staff_client
from tests.coordinator.conftest import BASE, key_client, make_key
from tests.factories import job_in_state

pytestmark = pytest.mark.django_db

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
JOBS = "/api/v1/runner-jobs/"
CREATE = {"workspace": "acme", "type": "echo", "payload": {"n": 1}}


def snapshot() -> tuple[int, ...]:
    """Every row a request could write, and every job's version."""
    versions = RunnerJob.objects.aggregate(total=Sum("version"))["total"] or 0
    return (
        RunnerJob.objects.count(),
        versions,
        JobEvent.objects.count(),
        JobStep.objects.count(),
        WebhookEndpoint.objects.count(),
    )


# --- Headers ------------------------------------------------------------------------------------


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# What a server hands Django for header bytes (latin-1 text): bytes that are not UTF-8, or UTF-8
# text with a control character in it.
NOT_UTF8 = st.binary(min_size=1, max_size=12).filter(lambda b: not _is_utf8(b))
CONTROL = st.sampled_from([chr(c) for c in (*range(0, 9), *range(10, 32), 127)])
WITH_CONTROL = st.tuples(st.text("abc123", max_size=4), CONTROL, st.text("xyz", max_size=4)).map(
    lambda parts: "".join(parts).encode()
)
BAD_HEADER = st.one_of(NOT_UTF8, WITH_CONTROL).map(lambda raw: raw.decode("latin-1"))


@pytest.fixture
def running_agent_job(workspace):
    return job_in_state("running", type="agent-task", workspace=workspace)


@given(junk=BAD_HEADER)
@EXAMPLES
def test_an_authorization_header_that_is_not_text_is_401_everywhere(member, junk):
    before = snapshot()
    client = APIClient()
    for method, url in [("get", JOBS), ("post", JOBS), ("get", f"{BASE}/health/")]:
        response = getattr(client, method)(
            url, CREATE, format="json", HTTP_AUTHORIZATION=f"Token {junk}"
        )
        assert response.status_code == 401, (url, junk)
        assert response.json()["code"] == "authentication_failed"
    assert snapshot() == before


@given(junk=BAD_HEADER)
@EXAMPLES
def test_an_api_key_that_is_not_text_is_401(db, junk):
    before = snapshot()
    response = APIClient().post(f"{BASE}/jobs/", CREATE, format="json", HTTP_X_API_KEY=junk)
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    assert snapshot() == before


@given(junk=BAD_HEADER)
@EXAMPLES
def test_idempotency_key_and_if_match_that_are_not_text_are_400(client, workspace, junk):
    job = job_in_state("queued", workspace=workspace)
    before = snapshot()
    response = client.post(JOBS, CREATE, format="json", HTTP_IDEMPOTENCY_KEY=junk)
    assert response.status_code == 400
    assert response.json() == {"Idempotency-Key": ["Must be printable UTF-8 text."]}
    response = client.post(f"{JOBS}{job.pk}/cancel/", HTTP_IF_MATCH=junk)
    assert response.status_code == 400
    assert "If-Match" in response.json()
    assert snapshot() == before


def test_a_utf8_idempotency_key_is_still_a_key(client):
    first = client.post(
        JOBS, CREATE, format="json", HTTP_IDEMPOTENCY_KEY="clé".encode().decode("latin-1")
    )
    again = client.post(
        JOBS, CREATE, format="json", HTTP_IDEMPOTENCY_KEY="clé".encode().decode("latin-1")
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert RunnerJob.objects.get().idempotency_key == "clé"


# --- JSON that PostgreSQL cannot hold -----------------------------------------------------------

SAFE_TEXT = st.text(max_size=4)
# Lone surrogates and NUL, as a client writes them: JSON escapes inside a string.
BAD_ESCAPE = st.sampled_from(["\\u0000", "\\ud800", "\\udbff", "\\udc00", "\\udfff"])
BAD_STRING = st.builds(
    lambda pre, bad, post: json.dumps(pre)[:-1] + bad + json.dumps(post)[1:],
    SAFE_TEXT,
    BAD_ESCAPE,
    SAFE_TEXT,
)
NON_FINITE = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    st.integers(309, 100_000).map(lambda e: f"1e{e}"),
    st.integers(309, 1000).map(lambda e: f"-2.5E+{e}"),
)
BAD_KEY = BAD_STRING.map(lambda key: "{" + key + ": 1}")


def _nest(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        inner.map(lambda t: f"[1, {t}]"),
        st.tuples(SAFE_TEXT, inner).map(lambda kv: "{" + json.dumps(kv[0]) + ": " + kv[1] + "}"),
    )


# Any JSON document with, somewhere, a value or key PostgreSQL cannot store.
UNSTORABLE_JSON = st.recursive(st.one_of(BAD_STRING, NON_FINITE, BAD_KEY), _nest, max_leaves=4)

# (client, method, URL, body template, field): where a client's JSON or text is stored.
JSON_FIELDS = [
    ("consumer", "post", JOBS, '{"workspace": "acme", "type": "echo", "payload": {"k": %s}}'),
    ("key", "post", f"{BASE}/jobs/", '{"workspace": "acme", "type": "echo", "payload": %s}'),
    ("key", "post", f"{BASE}/jobs/{{job}}/complete/", '{"result": %s}'),
    ("key", "post", f"{BASE}/jobs/{{job}}/events/", '{"type": "agent.note", "payload": [%s]}'),
]
TEXT_FIELDS = [
    ("consumer", "post", JOBS, '{"workspace": "acme", "type": "echo", "agent_task_id": %s}'),
    ("consumer", "post", JOBS, '{"workspace": %s, "type": "echo"}'),
    ("consumer", "post", "/api/v1/webhooks/", '{"workspace": "acme", "url": %s}'),
    ("key", "post", f"{BASE}/jobs/{{job}}/fail/", '{"error": %s}'),
    ("key", "post", f"{BASE}/jobs/{{job}}/status/", '{"status": "failed", "error": %s}'),
    ("key", "post", f"{BASE}/jobs/{{job}}/steps/", '{"name": %s}'),
    ("key", "patch", f"{BASE}/jobs/{{job}}/steps/{{step}}/", '{"status": "running", "output": %s}'),
    ("key", "post", f"{BASE}/jobs/{{job}}/progress/", '{"progress": 5, "message": %s}'),
    ("key", "post", f"{BASE}/jobs/claim/", '{"types": ["agent-task"], "worker": %s}'),
    ("key", "post", f"{BASE}/jobs/{{job}}/events/", '{"type": %s}'),
]


@pytest.fixture
def clients(client, running_agent_job):
    coordinator = key_client(make_key())
    step = coordinator.post(
        f"{BASE}/jobs/{running_agent_job.pk}/steps/", {"name": "s"}, format="json"
    ).json()
    return {"consumer": client, "key": coordinator}, {
        "job": running_agent_job.pk,
        "step": step["id"],
    }


def _send_and_expect_nothing_written(clients, target, value):
    by_name, ids = clients
    who, method, url, body = target
    before = snapshot()
    response = getattr(by_name[who], method)(
        url.format(**ids), body % value, content_type="application/json"
    )
    assert response.status_code == 400, (url, body % value, response.content)
    error = response.json()
    # Field errors naming the field (and where in it), or the parser's own refusal of NaN.
    assert error.get("code") == "parse_error" or len(error) == 1, error
    assert snapshot() == before


@given(target=st.sampled_from(JSON_FIELDS), value=UNSTORABLE_JSON)
@EXAMPLES
def test_json_postgresql_cannot_store_is_400_in_every_json_field(clients, target, value):
    _send_and_expect_nothing_written(clients, target, value)


@given(target=st.sampled_from(TEXT_FIELDS), value=BAD_STRING)
@EXAMPLES
def test_text_postgresql_cannot_store_is_400_in_every_text_field(clients, target, value):
    _send_and_expect_nothing_written(clients, target, value)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            '{"workspace": "acme", "type": "echo", "payload": {"a": [1, {"b": "x\\u0000"}]}}',
            {
                "payload": [
                    'payload["a"][1]["b"]: contains U+0000 (NUL), which PostgreSQL cannot store.'
                ]
            },
        ),
        (
            '{"workspace": "acme", "type": "echo", "payload": {"\\ud800": 1}}',
            {
                "payload": [
                    'payload["\\ud800"]: the key contains a lone surrogate (\\ud800), which is '
                    "not Unicode text."
                ]
            },
        ),
        (
            '{"workspace": "acme", "type": "echo", "payload": {"n": 1e999}}',
            {"payload": ['payload["n"]: is not a finite number (JSON has no infinity or NaN).']},
        ),
        (
            '{"workspace": "acme", "type": "echo", "\\u0000": 1}',
            {
                "non_field_errors": [
                    '"\\u0000": contains U+0000 (NUL), which PostgreSQL cannot store.'
                ]
            },
        ),
    ],
)
def test_the_refusal_names_the_field_and_the_place(client, body, error):
    response = client.post(JOBS, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == error
    assert not RunnerJob.objects.exists()


def test_a_pair_of_surrogate_escapes_is_one_character_and_stored(client):
    body = '{"workspace": "acme", "type": "echo", "payload": {"emoji": "\\ud83d\\ude00"}}'
    response = client.post(JOBS, body, content_type="application/json")
    assert response.status_code == 201
    assert RunnerJob.objects.get().payload == {"emoji": "\U0001f600"}


# --- Queries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "status=%00",
        "type=%00",
        "type=echo%00",
        "agent_task_id=%00",
        "workspace=%00",
        "retry_of=%00",
        "created_after=%00",
        "cursor=%00",
        "%00=1",
    ],
)
def test_a_nul_in_a_list_query_is_400(client, query):
    response = client.get(f"{JOBS}?{query}")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The URL must not contain U+0000 (NUL).",
        "code": "bad_request",
    }


def test_a_nul_in_an_event_query_or_a_job_url_is_400(client, workspace):
    job = job_in_state("queued", workspace=workspace)
    assert client.get(f"{JOBS}{job.pk}/events/?type=%00").status_code == 400
    assert client.get(f"{JOBS}{job.pk}/events/?after=1%00").status_code == 400
    assert client.get(f"{JOBS}%00/").status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "/admin/runner_jobs/runnerjob/?q=%00",
        "/admin/runner_jobs/runnerjob/?status__exact=%00",
        "/admin/runner_jobs/runnerjob/?type=%00",
        "/admin/job_events/jobevent/?type=%00",
        "/admin/job_events/webhookendpoint/?q=%00",
        "/admin/workspaces/workspace/?q=%00",
    ],
)
def test_a_nul_in_an_admin_filter_or_search_is_400(url):
    response = staff_client("bob", superuser=True).get(url)
    assert response.status_code == 400


# --- Webhooks and custom event types -----------------------------------------------------------


@pytest.fixture
def workspace_admin(client, member):
    """alice, an admin of acme: she may register its webhooks."""
    member.role = "admin"
    member.save()
    return client


def test_a_webhook_without_event_types_is_a_400_field_error(workspace_admin):
    response = workspace_admin.post(
        "/api/v1/webhooks/",
        {"workspace": "acme", "url": "https://hooks.example.com/x"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"event_types": ["This field is required."]}
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "event_type", ["job.completed\n", "job.*\n", "*\n", "\njob.completed", "job.completed\r"]
)
def test_a_webhook_event_type_with_a_newline_is_refused(workspace_admin, event_type):
    response = workspace_admin.post(
        "/api/v1/webhooks/",
        {"workspace": "acme", "url": "https://hooks.example.com/x", "event_types": [event_type]},
        format="json",
    )
    assert response.status_code == 400
    assert "event_types" in response.json()
    assert not WebhookEndpoint.objects.exists()


def test_a_custom_event_type_with_a_trailing_newline_is_refused(running_agent_job):
    before = snapshot()
    with pytest.raises(services.JobInputError) as refused:
        services.event_append(job_id=running_agent_job.pk, type="agent.note\n", actor="system")
    assert "type" in refused.value.errors
    assert snapshot() == before
    # Over the API the newline is trimmed like any CharField's whitespace: the type is the one
    # that was meant, and it matches.
    response = key_client(make_key()).post(
        f"{BASE}/jobs/{running_agent_job.pk}/events/", {"type": "agent.note\n"}, format="json"
    )
    assert response.status_code == 201
    assert JobEvent.objects.filter(job=running_agent_job).latest("id").type == "agent.note"
