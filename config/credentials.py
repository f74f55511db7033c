"""A short in-process memory of credentials just checked (consumer tokens, coordinator keys), so a
client's next requests skip the credential's query. A revoked credential is refused everywhere
within ``RUNNER_AUTH_CACHE_SECONDS``; only successful checks are remembered, keyed by a hash of
the secret (the secret itself is not kept)."""

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from django.conf import settings

T = TypeVar("T")


class CheckedCredentials(Generic[T]):
    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict[bytes, tuple[float, T]] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def check(self, secret: bytes, check: Callable[[], T]) -> T:
        """``check()``'s answer for ``secret``, remembered for ``RUNNER_AUTH_CACHE_SECONDS``;
        a failing check raises and is not remembered."""
        ttl: float = settings.RUNNER_AUTH_CACHE_SECONDS
        if ttl <= 0:
            return check()
        digest = hashlib.sha256(secret).digest()
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = check()
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[digest] = (now + ttl, value)
        return value

    def forget(self) -> None:
        """Forget every remembered check."""
        self._entries.clear()
