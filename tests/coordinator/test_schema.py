import pytest

pytestmark = pytest.mark.django_db


def test_schema_documents_the_coordinator_api_and_its_key(client):
    response = client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    paths = {p for p in schema["paths"] if p.startswith("/api/v1/coordinator/")}
    assert paths == {
        "/api/v1/coordinator/health/",
        "/api/v1/coordinator/jobs/",
        "/api/v1/coordinator/jobs/claim/",
        "/api/v1/coordinator/jobs/{id}/",
        "/api/v1/coordinator/jobs/{id}/status/",
        "/api/v1/coordinator/jobs/{id}/progress/",
        "/api/v1/coordinator/jobs/{id}/heartbeat/",
        "/api/v1/coordinator/jobs/{id}/complete/",
        "/api/v1/coordinator/jobs/{id}/fail/",
        "/api/v1/coordinator/jobs/{id}/steps/",
        "/api/v1/coordinator/jobs/{id}/steps/{step_id}/",
        "/api/v1/coordinator/jobs/{id}/events/",
    }
    assert schema["components"]["securitySchemes"]["CoordinatorKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    claim = schema["paths"]["/api/v1/coordinator/jobs/claim/"]["post"]
    assert claim["security"] == [{"CoordinatorKey": []}]
