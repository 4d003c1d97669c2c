"""Bounds of the values routes take from paths, queries and headers, defined once.

A value a handler cannot use must be refused at the edge, as a 422 naming the parameter
("path.item_id: Input should be less than or equal to 2147483647"), never reach the database: an
integer past a 32-bit column makes PostgreSQL fail the query (SQLite's 64-bit integers fail past
2**63), and PostgreSQL refuses NUL in text. So integers are bounded to the columns they are looked
up in, and every string a route takes has a pattern that admits no control character. The aliases
carry the bounds; each route adds its description (``Annotated[DbInt, Path(description=...)]``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

DB_INT_MAX = 2**31 - 1  # INTEGER on PostgreSQL; the same bound on SQLite, so a request means the same on both
DbInt = Annotated[int, Field(ge=1, le=DB_INT_MAX)]
"""A positive integer that fits the database's INTEGER columns (ids, counts, seconds)."""

TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""An opaque token the service hands out (ping tokens: hex)."""

PRINTABLE_ASCII_PATTERN = r"^[\x20-\x7e]{1,200}$"
"""A header value a client chooses (Idempotency-Key, an sf-string in its IETF draft): printable ASCII."""
