"""What PostgreSQL can store, and the API render back, of a JSON value a client sends.

JSON allows what PostgreSQL refuses: ``\\u0000`` (jsonb and text columns refuse NUL), a lone
surrogate such as ``\\ud800`` (not Unicode text, so not UTF-8), numbers that overflow to
infinity (``1e999``); and Python's JSON encoder recurses, so very deep nesting cannot be
rendered back. One check finds all of them, for the request parser (every body of every API)
and for the services (what a handler or other Python caller hands them)."""

import json
import math
import re
from typing import Any

MAX_DEPTH = 64
# The characters PostgreSQL refuses in text and jsonb: NUL, and the surrogates (which can only
# be lone in a Python str: a JSON pair of escapes decodes to one character).
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _text_reason(text: str) -> str | None:
    found = _UNSTORABLE_CHARACTER.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains U+0000 (NUL), which PostgreSQL cannot store."
    return f"contains a lone surrogate ({ascii(found.group())[1:-1]}), which is not Unicode text."


def _is_storable(value: Any, max_depth: int) -> bool:
    """The fast pass: no paths, one regex search per string."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE_CHARACTER.search(item):
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict | list):
            if depth > max_depth:
                return False
            if isinstance(item, dict):
                for key in item:
                    if isinstance(key, str) and _UNSTORABLE_CHARACTER.search(key):
                        return False
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
    return True


def unstorable_reason(value: Any, *, path: str = "$", max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored, naming where (``path["a"][0]: ...``), or
    None. Walked without recursion, so a deep value cannot overflow the stack here either; the
    path is worked out only for a value that has a problem."""
    return None if _is_storable(value, max_depth) else _reason_at(value, path, max_depth)


def _reason_at(value: Any, path: str, max_depth: int) -> str | None:
    """The slow pass: the first problem, with its path."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        reason: str | None = None
        if isinstance(item, str):
            reason = _text_reason(item)
        elif isinstance(item, float) and not math.isfinite(item):
            reason = "is not a finite number (JSON has no infinity or NaN)."
        elif isinstance(item, dict | list):
            if depth > max_depth:
                # Named from the top: the full path of a deep value would be as long as it is deep.
                return f"{path}: nests deeper than {max_depth} levels."
            if isinstance(item, dict):
                for key, child in item.items():
                    child_where = f"{where}[{key_repr(key)}]"
                    key_reason = _text_reason(key) if isinstance(key, str) else None
                    if key_reason:
                        return f"{child_where}: the key {key_reason}"
                    stack.append((child, child_where, depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        if reason:
            return f"{where}: {reason}"
    return None


def key_repr(key: Any) -> str:
    """``key`` as a JSON string in ASCII: safe to store and to render, whatever it holds."""
    return json.dumps(key)
