"""The signature of a webhook body: ``Strata-Signature: t=<unix seconds>,v1=<hex>``, where ``<hex>``
is HMAC-SHA256, keyed with the subscription's secret, of ``f"{t}.".encode() + body``.

The timestamp is signed with the body, so a captured request cannot be replayed later than
``tolerance_s`` with a new time. ``verify`` is what a receiver calls (it needs the standard
library only; docs/webhooks.md shows the same in a few lines); ``sign`` is what the deliverer uses.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from services.errors import InvalidInput

HEADER = "Strata-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


class InvalidSignature(InvalidInput):
    """The header is missing or malformed, no signature matches the body, or it is too old (or new)."""


def digest(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>." + body`` with ``secret``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Strata-Signature`` header value of ``body`` sent at ``timestamp`` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},{SCHEME}={digest(secret, t, body)}"


def verify(secret: str, body: bytes, header: str | None, tolerance_s: float = DEFAULT_TOLERANCE_S, *,
           now: float | None = None) -> int:
    """Check a received ``Strata-Signature`` header against the raw ``body`` bytes; returns its
    timestamp. Raises InvalidSignature when it does not match, or when its time is more than
    ``tolerance_s`` away from ``now`` (a replay). Several ``v1`` values may be given (any one may match)."""
    timestamp, signatures = _parse(header)
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise InvalidSignature(f"signature timestamp {timestamp} is more than {tolerance_s:g} s away from now")
    expected = digest(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise InvalidSignature("no signature matches the body")
    return timestamp


def _parse(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise InvalidSignature(f"no {HEADER} header")
    timestamp, signatures = None, []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidSignature(f"malformed {HEADER} header: {part.strip()!r} is not key=value")
        if key == "t":
            if not value.isascii() or not value.isdigit():
                raise InvalidSignature(f"malformed {HEADER} header: t={value!r} is not a unix time")
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidSignature(f"malformed {HEADER} header: it needs t=<unix time> and {SCHEME}=<hex>")
    return timestamp, signatures
