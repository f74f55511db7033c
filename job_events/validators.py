"""Field rules of webhook endpoints, shared by the model (so the admin applies them) and the API."""

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from job_events.outbound import validate_webhook_destination
from runner_jobs.events import EVENT_TYPE_MAX_LENGTH, EVENT_TYPE_PATTERN

EVENT_TYPES_MAX = 50

webhook_url_validator = URLValidator(
    schemes=["http", "https"], message="Enter an http:// or https:// URL."
)
# The model field (so the admin's form) and the API's serializer check a URL with these.
WEBHOOK_URL_VALIDATORS: list[Callable[[str], None]] = [
    webhook_url_validator,
    validate_webhook_destination,
]


def validate_event_types(value: Any) -> None:
    """A non-empty list of event types or patterns (``"*"``, ``"job.*"``)."""
    if not isinstance(value, list) or not value:
        raise ValidationError("Must be a non-empty list of event types.")
    if len(value) > EVENT_TYPES_MAX:
        raise ValidationError(f"At most {EVENT_TYPES_MAX} event types.")
    for item in value:
        if (
            not isinstance(item, str)
            or len(item) > EVENT_TYPE_MAX_LENGTH
            or not EVENT_TYPE_PATTERN.fullmatch(item)
        ):
            raise ValidationError(
                f"{item!r} is not an event type: use a dotted lowercase name "
                '("job.completed"), a prefix ("job.*") or "*".'
            )
