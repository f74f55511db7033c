"""The event stream in the OpenAPI schema.

The stream is an async Django view (DRF has none), so drf-spectacular does not see it; this
postprocessing hook describes it, every status included, next to the views it generated."""

from typing import Any

from config.schema import RETRY_AFTER
from runner_jobs.read_tokens import QUERY_PARAMETER

STREAM_PATH = "/api/v1/runner-jobs/{id}/events/stream/"


def _error(description: str, **headers: Any) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _stream_operation() -> dict[str, Any]:
    return {
        "operationId": "runner_jobs_events_stream",
        "summary": "Follow a job's events live (Server-Sent Events)",
        "description": (
            "Each event as `id: <event id>`, `event: <type>`, `data: <event JSON>`, from the "
            "first or after `Last-Event-ID` / `after`; a `retry:` field first, a comment as "
            "keep-alive; ends after the terminal event. A reconnect with nothing left to send "
            "is a 204, which stops a browser's `EventSource`. Credentials and access are "
            "checked again while it is open; a credential holds a limited number of streams."
        ),
        "tags": ["runner-jobs"],
        "parameters": [
            {
                "in": "path",
                "name": "id",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            },
            {
                "in": "query",
                "name": "after",
                "schema": {"type": "integer", "minimum": 0},
                "description": "Resume after this event id (`Last-Event-ID` wins).",
            },
            {
                "in": "header",
                "name": "Last-Event-ID",
                "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                "description": "Sent by a reconnecting `EventSource`: resume after it.",
            },
            {
                "in": "query",
                "name": QUERY_PARAMETER,
                "schema": {"type": "string"},
                "description": "The job's read token, for clients that cannot send headers.",
            },
        ],
        "security": [
            {"knoxApiToken": []},
            {"cookieAuth": []},
            {"readTokenBearer": []},
            {"readTokenQuery": []},
        ],
        "responses": {
            "200": {
                "description": "The stream.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "204": {"description": "Nothing left to send: the job ended, its events were read."},
            "400": _error(
                "`invalid`: the cursor is not an event id (or the request guard's `bad_request`)."
            ),
            "401": _error("No valid token, session or read token for this job."),
            "404": _error("No such job in your workspaces."),
            "405": _error("Only GET."),
            "413": _error("A stream request takes no body; refused before it is read."),
            "429": _error(
                "`too_many_streams`: this credential holds its limit of open streams (or "
                "`throttled`: a malformed credential over the address' quota).",
                **RETRY_AFTER,
            ),
            "500": _error("`server_error`: a fault of ours."),
            "503": _error("`unavailable`: PostgreSQL cannot be reached.", **RETRY_AFTER),
        },
    }


def stream_paths(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: adds the event stream's path."""
    result.setdefault("paths", {})[STREAM_PATH] = {"get": _stream_operation()}
    return result
