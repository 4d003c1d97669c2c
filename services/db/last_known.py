"""Answers the database gave lately, to stand in while it cannot be reached.

Serving must survive a database blip: a ``/segment`` request needs its API key checked and its
model's row read, while the model itself is in memory. ``LastKnown`` keeps what such a lookup
returned for ``max_age_s``; it is read only when the database fails (stale-if-error), so while the
database is up every request sees the current rows and a revoked key stops at once. During an
outage a key revoked just before still works until its entry expires; ``max_age_s`` = 0 turns the
fallback off.

``fresh_s`` > 0 also answers from memory while the database is up: a value looked up less than
``fresh_s`` ago is returned without asking again (API keys: STRATA_AUTH_CACHE_S, so a /segment
request does not pay a database round trip to check its key). A key revoked elsewhere then works
for at most ``fresh_s`` more seconds; ``forget`` ends that at once where the revocation happens.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from services.db.errors import CONNECTION_ERRORS, is_outage

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LastKnown(Generic[K, V]):
    """A bounded map key -> (value, when fetched); least recently stored entries go first."""

    def __init__(self, max_age_s: float, max_entries: int = 10_000, fresh_s: float = 0.0) -> None:
        self.max_age_s, self.max_entries, self.fresh_s = max_age_s, max_entries, fresh_s
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()

    def fetch(self, key: K, lookup: Callable[[], V | None]) -> V | None:
        """``lookup()``, remembered when it found something; when the database cannot be reached,
        the value remembered for ``key`` if recent enough, else the connection error. A value
        looked up less than ``fresh_s`` ago is returned without calling ``lookup``."""
        if self.fresh_s > 0:
            fresh = self._recall(key, self.fresh_s)
            if fresh is not None:
                return fresh
        try:
            value = lookup()
        except CONNECTION_ERRORS as err:
            remembered = self._recall(key, self.max_age_s) if is_outage(err) else None
            if remembered is None:
                raise
            return remembered
        except Exception:
            self.forget(key)  # e.g. not found any more: never stand in for it
            raise
        if value is None:
            self.forget(key)  # gone or revoked: never stand in for it
        elif self.max_age_s > 0 or self.fresh_s > 0:
            self._store(key, value)
        return value

    def forget(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def _store(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = (value, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def _recall(self, key: K, max_age_s: float) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[1] >= max_age_s:
            return None
        return entry[0]
