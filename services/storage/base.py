"""The object-store interface shared by the filesystem and S3/MinIO backends.

An object store maps keys (relative, '/'-separated names such as
``datasets/12/images/0001.jpg``) to immutable byte strings.  Writes stream in chunks and
are atomic: an object is either absent or complete.  Every write computes the sha256 of
the bytes it stored and returns it in an :class:`ObjectInfo`.
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from services.storage.errors import (
    IntegrityError,
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
)
from services.storage.keys import validate_key, validate_prefix
from services.storage.streams import CHUNK_SIZE, HashingReader, file_sha256


# --- values --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object.

    ``sha256`` is the lowercase hex digest, or None where the backend does not know it
    without reading the object (``list()`` never computes it; see docs/storage.md).
    ``last_modified`` is timezone-aware UTC, or None where the backend did not report it.
    """

    key: str
    size: int
    sha256: str | None = None
    last_modified: datetime | None = None


# --- reading -------------------------------------------------------------------------------
class ObjectReader(io.RawIOBase):
    """A readable binary stream over one stored object, with its :class:`ObjectInfo`.

    ``info.sha256`` is the digest recorded at write time when the backend has one (callers
    can verify what they read against it); ``translate`` turns backend read errors (a
    dropped connection) into StorageError.
    """

    def __init__(
        self,
        raw: BinaryIO,
        info: ObjectInfo,
        translate: Callable[[Exception], Exception | None] | None = None,
    ) -> None:
        super().__init__()
        self._raw = raw
        self.info = info
        self._translate = translate or (lambda exc: None)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._raw.read() if size is None or size < 0 else self._raw.read(size)
        except Exception as exc:
            mapped = self._translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return bytes(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


# --- the interface -------------------------------------------------------------------------
class ObjectStore(abc.ABC):
    """Streaming, atomic object storage.  Backends implement the abstract methods; the
    conveniences (put_bytes, put_file, download, exists, delete_prefix) are built on them."""

    # -- abstract primitives --------------------------------------------------------------
    @abc.abstractmethod
    def put(
        self,
        key: str,
        stream: BinaryIO,
        length: int | None = None,
        content_type: str = "application/octet-stream",
        *,
        sha256: str | None = None,
    ) -> ObjectInfo:
        """Store everything ``stream`` yields under ``key``, reading it in chunks.

        ``length``: the exact number of bytes the stream holds, or None when unknown; a
        stream that ends early or runs on raises IntegrityError.  ``sha256``: the expected
        digest, if the caller knows it; a mismatch raises IntegrityError.  On any error no
        object (and no part of one) is left under ``key``; a previous object stays intact.
        Returns the stored size and the sha256 computed while streaming.
        """

    @abc.abstractmethod
    def open(self, key: str) -> contextlib.AbstractContextManager[ObjectReader]:
        """Context manager yielding an :class:`ObjectReader`; raises ObjectNotFound on
        entry.  Leaving the block closes the stream and releases the connection."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, sha256 (when known) and modification time; raises ObjectNotFound."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (plain string prefix, recursive),
        sorted by key.  ``sha256`` is None in listings: use stat() for it."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StorageUnavailable, saying why, unless the store is reachable and set up."""

    @abc.abstractmethod
    def ensure_ready(self) -> None:
        """Create the bucket / root directory if missing (idempotent)."""

    # -- conveniences -----------------------------------------------------------------------
    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store a small in-memory byte string."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"put_bytes({key!r}) needs bytes, got {type(data).__name__}")
        return self.put(key, io.BytesIO(bytes(data)), len(data), content_type)

    def put_file(
        self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store a local file.  Its sha256 is computed first (one extra local read) so the
        backend can record it with the object; a file changed meanwhile raises IntegrityError."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"put_file({key!r}): {path} is not a file")
        digest = file_sha256(path)
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            return self.put(key, f, size, content_type, sha256=digest)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (non-empty); return how many were deleted."""
        keys = [info.key for info in self.list(_nonempty_prefix(prefix))]
        for key in keys:
            self.delete(key)
        return len(keys)

    def download(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Stream the object into ``path`` atomically and return its info with the sha256 of
        the bytes written.  The bytes go to a temp file beside ``path`` that is renamed over
        it only when complete and (where the store recorded a sha256) verified; on any error
        ``path`` is untouched and the temp file removed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out, self.open(key) as src:
                reader = HashingReader(src, key, length=src.info.size)
                while chunk := reader.read(CHUNK_SIZE):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = reader.hexdigest()
            if src.info.sha256 is not None and src.info.sha256 != digest:
                raise IntegrityError(
                    f"object {key!r} is corrupt: stored sha256 {src.info.sha256}, read {digest}"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return ObjectInfo(key, reader.size, digest, src.info.last_modified)


def _nonempty_prefix(prefix: str) -> str:
    validate_prefix(prefix)
    if not prefix:
        raise InvalidKey("refusing to delete with an empty prefix (that is the whole store)")
    return prefix


__all__ = [
    "IntegrityError",
    "InvalidKey",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectReader",
    "ObjectStore",
    "StorageError",
    "StorageUnavailable",
    "validate_key",
    "validate_prefix",
]
