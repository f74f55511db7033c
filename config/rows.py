"""Model instances from rows of SQL built once per process (the hot path's reads and writes skip
Django's per-request query building): the model's concrete columns in order, each value through
its field's ``from_db_value`` as the ORM would do it."""

from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model

M = TypeVar("M", bound=Model)


def model_columns(model: type[Model], alias: str) -> list[str]:
    """``alias``'s columns of ``model``, quoted, in the order ``model_from_row`` takes them."""
    return [f'{alias}."{field.column}"' for field in model._meta.concrete_fields]


def model_from_row(model: type[M], values: Sequence[Any]) -> M:
    """An instance of ``model`` from the values of ``model_columns``, as loaded by the ORM."""
    fields = model._meta.concrete_fields
    return model.from_db(
        connection.alias,
        [field.attname for field in fields],
        [
            field.from_db_value(value, None, connection)
            if hasattr(field, "from_db_value")
            else value
            for field, value in zip(fields, values, strict=True)
        ],
    )
