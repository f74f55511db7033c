"""Request parsers of the APIs."""

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

from runner_jobs.storable import key_repr, unstorable_reason

NON_FIELD_ERRORS = "non_field_errors"


def unstorable_field_errors(data: Any) -> dict[str, list[str]]:
    """DRF field errors for the values of a body that PostgreSQL could not store, keyed by the
    body's top-level field (a key that is itself unstorable is named in ``non_field_errors``)."""
    if not isinstance(data, dict):
        reason = unstorable_reason(data)
        return {NON_FIELD_ERRORS: [reason]} if reason else {}
    errors: dict[str, list[str]] = {}
    for key, value in data.items():
        reason = unstorable_reason(key, path=key_repr(key))
        if reason:
            errors.setdefault(NON_FIELD_ERRORS, []).append(reason)
        else:
            reason = unstorable_reason(value, path=key)
            if reason:
                errors[key] = [reason]
    return errors


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser (strict: ``NaN`` and ``Infinity`` are refused) that also refuses, with
    a 400 naming the field and the place, any value PostgreSQL cannot store
    (``runner_jobs.storable``): whatever field of whatever API it is in, it never reaches a
    query. A body nested too deeply for Python's ``json`` module is a 400 like any other
    malformed JSON, not a ``RecursionError``."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
        errors = unstorable_field_errors(data)
        if errors:
            raise ValidationError(errors, code="unstorable")
        return data
