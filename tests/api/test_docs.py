"""The OpenAPI schema and the interactive docs: public, valid, every response code documented."""

import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

# Every operation can be refused by the request guard, negotiation, the quotas and faults.
SHARED = {"400", "401", "406", "413", "429", "500", "503"}
# ... and one with a body also by its length (411) and media type (415); with a session, CSRF.
WRITE = {"411", "403"}
BODY = {"415"}
DOCUMENTED = {
    ("/api/v1/runner-jobs/", "post"): SHARED | WRITE | BODY | {"200", "201", "404", "409", "422"},
    ("/api/v1/runner-jobs/", "get"): SHARED | {"200"},
    ("/api/v1/runner-jobs/{id}/", "get"): SHARED | {"200", "404"},
    ("/api/v1/runner-jobs/{id}/cancel/", "post"): SHARED | WRITE | {"200", "404", "409", "412"},
    # A retry may carry a body (retry with changes), so its media type can be refused (415).
    ("/api/v1/runner-jobs/{id}/retry/", "post"): SHARED
    | WRITE
    | BODY
    | {"201", "404", "409", "412"},
    ("/api/v1/runner-jobs/{id}/events/", "get"): SHARED | {"200", "404"},
    ("/api/v1/webhooks/", "post"): SHARED | WRITE | BODY | {"201"},
    ("/api/v1/webhooks/{id}/", "delete"): SHARED | WRITE | {"204", "404"},
    ("/api/v1/coordinator/health/", "get"): SHARED | {"200"},
    ("/api/v1/coordinator/jobs/claim/", "post"): SHARED | BODY | {"200", "411"},
    ("/api/v1/coordinator/jobs/{id}/complete/", "post"): SHARED
    | BODY
    | {"200", "404", "409", "411"},
    ("/api/v1/runner-jobs/bulk/", "post"): SHARED | WRITE | BODY | {"202", "404"},
    ("/api/v1/operations/", "get"): SHARED | {"200"},
    ("/api/v1/operations/{id}/", "get"): SHARED | {"200", "404"},
    ("/api/v1/operations/{id}/cancel/", "post"): SHARED | WRITE | {"200", "404", "409"},
    ("/api/v1/job-types/", "get"): SHARED | {"200", "404"},
    ("/api/v1/job-types/{name}/", "patch"): SHARED | WRITE | BODY | {"200", "404"},
}


def test_schema_is_valid_openapi_and_documents_every_response_code():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    for (path, method), codes in DOCUMENTED.items():
        responses = schema["paths"][path][method]["responses"]
        assert set(responses) == codes, (path, method)
        for code in codes - {"200", "201", "204"}:
            assert responses[code]["content"]["application/json"]["schema"], (path, method, code)
    create = schema["paths"]["/api/v1/runner-jobs/"]["post"]
    headers = {p["name"] for p in create["parameters"] if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    assert "ETag" in create["responses"]["201"]["headers"]
    listed = schema["paths"]["/api/v1/runner-jobs/"]["get"]
    assert {p["name"] for p in listed["parameters"]} == {
        "status",
        "type",
        "agent_task_id",
        "workspace",
        "created_after",
        "created_before",
        "retry_of",
        "tag",
        "cursor",
        "page_size",
    }
    tag = next(p for p in listed["parameters"] if p["name"] == "tag")
    assert tag["schema"]["type"] == "array"
    assert tag["explode"] is True
    assert "metadata.<key>" in listed["description"]


def test_schema_and_docs_are_served_without_authentication():
    client = APIClient()
    schema = client.get("/api/v1/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    assert "/api/v1/runner-jobs/{id}/cancel/" in schema.json()["paths"]
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    page = docs.content.decode()
    # Swagger UI from our own static files, so the page works offline too.
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr.net" not in page


def test_the_workspace_feed_stream_is_documented_with_its_query_and_every_status():
    """An async view drf-spectacular cannot see (job_events/schema.py adds it): the feed pages'
    query (bar the page size) and ``Last-Event-ID``, tokens and sessions but not a job's read
    token, and every status it answers with; it never ends, so no 204."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    stream = schema["paths"]["/api/v1/events/stream/"]["get"]
    pages = schema["paths"]["/api/v1/events/"]["get"]
    assert set(stream["responses"]) == {
        *("200", "400", "401", "404", "405", "413", "429", "500", "503")
    }
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    for code in ("401", "404", "405", "413", "429", "500", "503"):
        error = stream["responses"][code]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}, code
    assert stream["responses"]["400"]["content"]["application/json"]["schema"]["type"] == "object"
    assert set(stream["responses"]["429"]["headers"]) == {"Retry-After"}
    parameters = {(p["in"], p["name"]): p for p in stream["parameters"]}
    assert set(parameters) == {
        ("query", "workspace"),
        ("query", "type"),
        ("query", "job_type"),
        ("query", "after"),
        ("header", "Last-Event-ID"),
    }
    assert parameters[("query", "workspace")]["required"] is True
    for repeatable in ("type", "job_type"):
        assert parameters[("query", repeatable)]["schema"]["type"] == "array"
        assert parameters[("query", repeatable)] in pages["parameters"]
    assert stream["security"] == [{"knoxApiToken": []}, {"cookieAuth": []}]
    assert stream["tags"] == pages["tags"] == ["events"]
