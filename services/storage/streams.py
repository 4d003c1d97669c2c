"""Streaming helpers: read a caller's stream in bounded chunks while hashing and counting it.

Nothing here holds more than one requested chunk of an object in memory.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import BinaryIO

from services.storage.errors import IntegrityError

CHUNK_SIZE = 1024 * 1024  # local copies move 1 MiB at a time
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: str) -> str:
    """Return ``value`` as a lowercase hex sha256 digest, or raise ValueError."""
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value.lower()):
        raise ValueError(f"sha256 must be 64 hex characters, got {value!r}")
    return value.lower()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


class HashingReader:
    """Wraps a binary stream: hashes and counts what passes through, enforces a declared length.

    ``read(n)`` keeps reading the wrapped stream until it has ``n`` bytes or the stream ends,
    so consumers that accumulate parts (minio's multipart loop) get whole parts in one piece
    instead of re-concatenating many small reads.  When the wrapped stream ends, the byte
    count is checked against ``length`` and the digest against ``sha256``; running past
    ``length`` fails at once.  All raise IntegrityError from ``read``, before the consumer
    has seen the end of the stream, so it abandons its write instead of committing it.
    """

    def __init__(
        self, stream: BinaryIO, key: str, length: int | None = None, sha256: str | None = None
    ) -> None:
        if not callable(getattr(stream, "read", None)):
            raise TypeError(f"data for {key!r} must be a binary stream with read(), got {type(stream).__name__}")
        if length is not None and (not isinstance(length, int) or length < 0):
            raise ValueError(f"length for {key!r} must be a non-negative int or None, got {length!r}")
        self._stream = stream
        self._key = key
        self._length = length
        self._expected = sha256
        self._digest = hashlib.sha256()
        self.size = 0
        self.eof = False
        self.error: Exception | None = None  # what read() last raised, for consumers to tell apart

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._read(size)
        except Exception as exc:
            self.error = exc
            raise

    def _read(self, size: int | None) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_SIZE), b""))
        parts: list[bytes] = []
        got = 0
        while got < size and not self.eof:
            data = self._stream.read(size - got)
            if not data:
                self.eof = True
                break
            data = self._as_bytes(data)
            parts.append(data)
            got += len(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._account(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def _as_bytes(self, data: object) -> bytes:
        if isinstance(data, bytes):
            return data
        if isinstance(data, (bytearray, memoryview)):
            return bytes(data)
        raise TypeError(
            f"data for {self._key!r} must be a binary stream; read() returned {type(data).__name__}"
        )

    def _account(self, data: bytes) -> None:
        self.size += len(data)
        if self._length is not None and self.size > self._length:
            raise IntegrityError(
                f"stream for {self._key!r} holds more than the declared {self._length} bytes"
            )
        self._digest.update(data)
        if self.eof and self._length is not None and self.size != self._length:
            raise IntegrityError(
                f"stream for {self._key!r} ended after {self.size} of the declared {self._length} bytes"
            )
        if self.eof and self._expected is not None and self._expected != self.hexdigest():
            raise IntegrityError(
                f"data for {self._key!r} has sha256 {self.hexdigest()}, expected {self._expected}"
            )
