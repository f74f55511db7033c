"""The OpenAPI schema and the interactive docs: public, valid, every response code documented."""

import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

DOCUMENTED = {
    ("/api/v1/runner-jobs/", "post"): {"200", "201", "400", "401", "403", "404", "413", "422"},
    ("/api/v1/runner-jobs/", "get"): {"200", "400", "401"},
    ("/api/v1/runner-jobs/{id}/", "get"): {"200", "401", "404"},
    ("/api/v1/runner-jobs/{id}/cancel/", "post"): {
        "200",
        "400",
        "401",
        "403",
        "404",
        "409",
        "412",
    },
    ("/api/v1/runner-jobs/{id}/retry/", "post"): {
        "201",
        "400",
        "401",
        "403",
        "404",
        "409",
        "412",
    },
    ("/api/v1/runner-jobs/{id}/events/", "get"): {"200", "400", "401", "404"},
}


def test_schema_is_valid_openapi_and_documents_every_response_code():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    for (path, method), codes in DOCUMENTED.items():
        assert set(schema["paths"][path][method]["responses"]) == codes, (path, method)
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
        "cursor",
        "page_size",
    }


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
