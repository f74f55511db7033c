"""Checking that a webhook delivery really comes from the service."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Runner-Signature"


def verify_webhook(
    secret: str,
    header: str | None,
    body: bytes | str,
    tolerance: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (the ``X-Runner-Signature`` value, ``t=<unix time>,v1=<hex>``) is the
    HMAC-SHA256 of ``"<t>.<body>"`` under the endpoint's ``secret``, made at most ``tolerance``
    seconds from now (so an old delivery cannot be replayed). Pass the raw body, before any JSON
    parsing: re-serialised JSON would not match."""
    if not header:
        return False
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp.isdigit() or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256
    ).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)
