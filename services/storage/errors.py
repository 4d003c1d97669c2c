"""The storage errors: every failure of an object store is a StorageError whose message names
the key or the store, so callers (the API, /readyz, the worker) can map it without guessing."""

from __future__ import annotations

from services.errors import InvalidInput, StrataError, Unavailable


class StorageError(StrataError):
    """Any failure of the object store; the message names the key or the store."""


class ObjectNotFound(StorageError):
    """The key does not name a stored object. Not a ``NotFound``: keys come from our own rows,
    so a missing object is a broken store (a server error), never a wrong request."""


class InvalidKey(StorageError, InvalidInput):
    """The key (or prefix) is malformed; the message says which rule it breaks."""


class StorageUnavailable(StorageError, Unavailable):
    """The store cannot be reached or is not set up (no bucket, no root directory)."""

    dependency = "object store"


class IntegrityError(StorageError):
    """Bytes do not match what was declared or stored: a length or sha256 mismatch."""
