"""The rules of a job's tags and metadata (SPEC §9), in one place for everything that takes them:
the create and retry services (consumer, coordinator, admin), the list filters and bulk filters.
Each check returns the errors to show (empty when the value is valid), never raises."""

import re
from typing import Any

MAX_TAGS = 20
TAG_MAX_LENGTH = 64
TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
MAX_METADATA_KEYS = 32
METADATA_VALUE_MAX_LENGTH = 256
METADATA_KEY_MAX_LENGTH = 64
# A metadata filter is a query parameter ``metadata.<key>``.
METADATA_FILTER_PREFIX = "metadata."


def tag_error(tag: Any) -> str | None:
    """Why ``tag`` is not a tag, or None."""
    if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
        return (
            f"{tag!r} is not a tag: 1 to {TAG_MAX_LENGTH} characters of a-z, 0-9 and _.:-, "
            "starting with a letter or digit."
        )
    return None


def tags_errors(tags: Any) -> list[str]:
    """Why ``tags`` is not a list of at most ``MAX_TAGS`` tags; empty when it is."""
    if not isinstance(tags, list):
        return ["Must be a list of strings."]
    errors = [error for tag in tags if (error := tag_error(tag))]
    if len(tags) > MAX_TAGS:
        errors.append(f"At most {MAX_TAGS} tags.")
    return errors


def tags_normalized(tags: list[str]) -> list[str]:
    """``tags`` without repeats, in the order given."""
    return list(dict.fromkeys(tags))


def metadata_key_error(key: Any) -> str | None:
    if not isinstance(key, str) or not 0 < len(key) <= METADATA_KEY_MAX_LENGTH:
        return f"Metadata keys are strings of 1 to {METADATA_KEY_MAX_LENGTH} characters."
    if "\x00" in key:
        return "Metadata keys must not contain the character U+0000."
    return None


def metadata_value_error(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX_LENGTH:
        return f"Metadata values are strings of at most {METADATA_VALUE_MAX_LENGTH} characters."
    if "\x00" in value:
        return "Metadata values must not contain the character U+0000."
    return None


def metadata_errors(metadata: Any) -> list[str]:
    """Why ``metadata`` is not an object of at most ``MAX_METADATA_KEYS`` string keys to short
    string values; empty when it is."""
    if not isinstance(metadata, dict):
        return ["Must be an object of string keys to string values."]
    errors: list[str] = []
    if len(metadata) > MAX_METADATA_KEYS:
        errors.append(f"At most {MAX_METADATA_KEYS} keys.")
    for key, value in metadata.items():
        for error in (metadata_key_error(key), metadata_value_error(value)):
            if error and error not in errors:
                errors.append(error)
    return errors
