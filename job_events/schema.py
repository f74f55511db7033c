"""The event streams in the OpenAPI schema.

The streams (a job's, and the workspace feed's) are async Django views (DRF has none), so
drf-spectacular does not see them; this postprocessing hook describes them, every status
included, next to the views it generated."""

from typing import Any

from config.schema import FIELD_ERRORS_SCHEMA, RETRY_AFTER
from runner_jobs.read_tokens import QUERY_PARAMETER

STREAM_PATH = "/api/v1/runner-jobs/{id}/events/stream/"
FEED_STREAM_PATH = "/api/v1/events/stream/"
# The feed's pages (a DRF view, in the generated schema): the stream takes the same query.
FEED_PAGES_PATH = "/api/v1/events/"
# What the pages take and the stream does not: a page's length.
PAGES_ONLY_PARAMETERS = frozenset({"page_size"})


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
            **_stream_refusals(),
        },
    }


def _stream_refusals() -> dict[str, Any]:
    """The refusals every stream shares, whatever it follows."""
    return {
        "405": _error("Only GET."),
        "413": _error("A stream request takes no body; refused before it is read."),
        "429": _error(
            "`too_many_streams`: this credential holds its limit of open streams (or "
            "`throttled`: a malformed credential over the address' quota).",
            **RETRY_AFTER,
        ),
        "500": _error("`server_error`: a fault of ours."),
        "503": _error("`unavailable`: PostgreSQL cannot be reached.", **RETRY_AFTER),
    }


def _feed_stream_operation(pages: dict[str, Any]) -> dict[str, Any]:
    """The workspace feed's stream; its query parameters are those of the feed's pages
    (``pages``, the generated operation), which one function reads for both."""
    query = [p for p in pages.get("parameters", []) if p["name"] not in PAGES_ONLY_PARAMETERS]
    return {
        "operationId": "events_stream",
        "summary": "Follow every job event of a workspace live (Server-Sent Events)",
        "description": (
            "Each event of the workspace's jobs as `id: <cursor>`, `event: <type>`, "
            "`data: <event JSON, with job_type and cursor>`, in the feed's order, from the "
            "first or after `Last-Event-ID` / `after`; a `retry:` field first, a comment as "
            "keep-alive; never closed by the server. No event is skipped because another "
            "transaction committed a lower id later, none is sent twice. Any role in the "
            "workspace; credentials and access are checked again while it is open; a "
            "credential holds a limited number of streams (shared with job streams). "
            "A job's read token is refused (it reads its own job only)."
        ),
        "tags": ["events"],
        "parameters": [
            *query,
            {
                "in": "header",
                "name": "Last-Event-ID",
                "schema": {"type": "string", "pattern": r"^([0-9]{1,20}\.)?[0-9]{1,19}$"},
                "description": "Sent by a reconnecting `EventSource` (a cursor of this feed, or "
                "an event id of the workspace): resume after it; wins over `after`.",
            },
        ],
        "security": [{"knoxApiToken": []}, {"cookieAuth": []}],
        "responses": {
            "200": {
                "description": "The stream.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "400": {
                "description": "Bad query: DRF's field-error object (`workspace` missing, a bad "
                "`type`, `job_type` or `after`, an unknown parameter), or the request guard's "
                "`detail` and `code` (`bad_request`).",
                "content": {"application/json": {"schema": FIELD_ERRORS_SCHEMA}},
            },
            "401": _error(
                "No valid `Authorization: Token <token>` or session (a job's read token included)."
            ),
            "404": _error("No such workspace among yours."),
            **_stream_refusals(),
        },
    }


def stream_paths(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: adds the event streams' paths."""
    paths = result.setdefault("paths", {})
    paths[STREAM_PATH] = {"get": _stream_operation()}
    pages = paths.get(FEED_PAGES_PATH, {}).get("get", {})
    paths[FEED_STREAM_PATH] = {"get": _feed_stream_operation(pages)}
    return result
