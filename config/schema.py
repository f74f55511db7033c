"""The refusals every operation of the API can answer with, added to the OpenAPI schema in one
place (a drf-spectacular postprocessing hook) so that no operation's list can fall behind the
code: the request guard, authentication, DRF's negotiation and parsing, the quotas and Django's
error handlers apply to every view, whoever wrote it. A view documents only what is its own
(a 409, a 412, a 422) and keeps its own wording where it already describes one of these."""

from typing import Any

ERROR_COMPONENT = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every refusal that is not a field error.",
    "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
    "required": ["detail", "code"],
}
FIELD_ERRORS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "DRF's field errors (field name to messages), or `detail` and `code`.",
    "additionalProperties": True,
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
UNSAFE_METHODS = frozenset({"post", "put", "patch", "delete"})
COOKIE_SCHEME = "cookieAuth"

ALWAYS = {
    400: "Bad input: field errors, or `detail` and `code` (a U+0000 in the URL, a header "
    "that is not UTF-8 text).",
    406: "`not_acceptable`: the `Accept` header rules out JSON.",
    413: "`request_too_large`: the body is over `DATA_UPLOAD_MAX_MEMORY_SIZE`; refused before "
    "it is read.",
    429: "`throttled`: over the quota of the credential (`RUNNER_API_QUOTA`) or, without a valid "
    "one, of the address (`RUNNER_ANON_QUOTA`); `Retry-After` says when to try again.",
    500: "`server_error`: a fault of ours, in the log under the response's `X-Request-ID`.",
    503: "`unavailable`: PostgreSQL cannot be reached; `Retry-After` says when to try again.",
}
AUTHENTICATED = {401: "`not_authenticated` or `authentication_failed`: no valid credential."}
WITH_PATH_PARAMETERS = {404: "`not_found`: no such object among those you may see."}
UNSAFE = {411: "`length_required`: a body sent chunked, without a `Content-Length`."}
WITH_SESSION = {
    403: "`permission_denied`: your role does not allow it, or a session request "
    "came without its CSRF token."
}
WITH_BODY = {415: "`unsupported_media_type`: the body is not `application/json`."}


def _statuses(method: str, operation: dict[str, Any]) -> dict[int, str]:
    security = operation.get("security") or []
    schemes = {name for requirement in security for name in requirement}
    statuses = dict(ALWAYS)
    if schemes:
        statuses.update(AUTHENTICATED)
    if any(p.get("in") == "path" for p in operation.get("parameters", [])):
        statuses.update(WITH_PATH_PARAMETERS)
    if method in UNSAFE_METHODS:
        statuses.update(UNSAFE)
        if COOKIE_SCHEME in schemes:
            statuses.update(WITH_SESSION)
    if "requestBody" in operation:
        statuses.update(WITH_BODY)
    return statuses


def _response(status: int, description: str) -> dict[str, Any]:
    schema = (
        FIELD_ERRORS_SCHEMA
        if status == 400
        else {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    )
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


def error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``POSTPROCESSING_HOOKS`` entry: every operation lists every refusal it can answer with."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        ERROR_COMPONENT, ERROR_SCHEMA
    )
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            for status, description in _statuses(method, operation).items():
                responses.setdefault(str(status), _response(status, description))
            operation["responses"] = dict(sorted(responses.items()))
    return result
