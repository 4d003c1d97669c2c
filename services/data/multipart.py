"""Receiving a multipart/form-data body chunk by chunk, files straight to disk.

Every file part is written to its own file in a work directory and hashed while it streams, so
memory stays bounded whatever the upload's size or number of files, and the request's digest
(for ``Idempotency-Key``) is known once the last byte has arrived. Framework-free: the caller
feeds the body's chunks (from an ASGI stream, a test, a CLI) and calls ``finish``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.data.upload import ReceivedFile, UploadRejected

DEFAULT_MAX_FILES = 100_000


@dataclass
class Received:
    """What a multipart body held: text fields by name, file parts by field name (in order)."""

    texts: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[ReceivedFile]] = field(default_factory=dict)
    sha256: str = ""  # digest of the parts' contents (not of the raw body: boundaries are random)

    def files_of(self, name: str) -> list[ReceivedFile]:
        return self.files.get(name, [])


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    text: bytearray | None = None
    out: BinaryIO | None = None
    path: Path | None = None
    size: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)


class MultipartSpool:
    """Parse a multipart/form-data body fed in chunks.

    text_fields: allowed text fields and the most bytes each may hold; a text field may also
    arrive as a file part (``curl -F spec=@spec.json``). file_fields: allowed file fields.
    Any other field, a text field over its limit, or more than ``max_files`` files raises
    UploadRejected naming it.
    """

    def __init__(self, content_type: str, directory: Path, *, text_fields: Mapping[str, int],
                 file_fields: set[str], max_files: int = DEFAULT_MAX_FILES) -> None:
        mime, params = parse_options_header(content_type or "")
        if mime != b"multipart/form-data":
            raise UploadRejected(f"expected a multipart/form-data body, got content type {content_type!r}")
        boundary = params.get(b"boundary")
        if not boundary:
            raise UploadRejected("the multipart/form-data content type has no boundary parameter")
        self.directory, self.text_fields, self.file_fields = directory, dict(text_fields), set(file_fields)
        self.max_files = max_files
        self.received = Received()
        self._part = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._count = 0
        self._ended = False
        self._digest_parts: list[list[str]] = []
        try:
            self._parser = MultipartParser(boundary, self._callbacks())
        except FormParserError as err:
            raise UploadRejected(f"malformed multipart body: {err}") from None

    # -- feeding ----------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body (blocking file writes: call it off the event loop)."""
        try:
            self._parser.write(chunk)
        except FormParserError as err:
            self.close()
            raise UploadRejected(f"malformed multipart body: {err}") from None
        except BaseException:
            self.close()
            raise

    def finish(self) -> Received:
        """The parsed body; raises UploadRejected if it stopped before its closing boundary."""
        self._parser.finalize()
        if not self._ended or self._part.out is not None:
            self.close()
            raise UploadRejected("the multipart body ended before its closing boundary (truncated upload?)")
        canonical = json.dumps(sorted(self._digest_parts), separators=(",", ":")).encode()
        self.received.sha256 = hashlib.sha256(canonical).hexdigest()
        return self.received

    def close(self) -> None:
        """Close the file being written, if any (files already received stay for the caller)."""
        if self._part.out is not None:
            self._part.out.close()
            self._part.out = None

    # -- parser callbacks -------------------------------------------------------------------
    def _callbacks(self) -> dict:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_end(self) -> None:
        self._part.headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        part = self._part
        disposition, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise UploadRejected("a multipart part has no Content-Disposition: form-data header with a name")
        part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", "replace")
        if part.name in self.text_fields:
            part.text = bytearray()
        elif part.name in self.file_fields:
            self._open_file(part)
        else:
            allowed = ", ".join(sorted(self.text_fields) + sorted(self.file_fields))
            raise UploadRejected(f"unknown form field {part.name!r}; expected {allowed}")

    def _open_file(self, part: _Part) -> None:
        if part.filename is None:
            raise UploadRejected(f"form field {part.name!r} must be a file upload (with a filename)")
        self._count += 1
        if self._count > self.max_files:
            raise UploadRejected(f"too many files: at most {self.max_files} per request")
        part.path = self.directory / f"part-{self._count:06d}"
        part.out = part.path.open("wb")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part, chunk = self._part, data[start:end]
        if part.text is not None:
            limit = self.text_fields[part.name]
            if len(part.text) + len(chunk) > limit:
                raise UploadRejected(f"form field {part.name!r} is over its limit of {limit} bytes")
            part.text.extend(chunk)
            return
        assert part.out is not None
        part.out.write(chunk)
        part.hasher.update(chunk)
        part.size += len(chunk)

    def _on_part_end(self) -> None:
        part = self._part
        if part.text is not None:
            try:
                value = part.text.decode("utf-8")
            except UnicodeDecodeError:
                raise UploadRejected(f"form field {part.name!r} is not UTF-8 text") from None
            if part.name in self.received.texts:
                raise UploadRejected(f"form field {part.name!r} was sent more than once")
            self.received.texts[part.name] = value
            self._digest_parts.append(["text", part.name, hashlib.sha256(part.text).hexdigest()])
            return
        assert part.out is not None and part.path is not None and part.filename is not None
        part.out.close()
        part.out = None
        digest = part.hasher.hexdigest()
        self.received.files.setdefault(part.name, []).append(
            ReceivedFile(name=part.filename, path=part.path, size=part.size, sha256=digest))
        self._digest_parts.append(["file", part.name, part.filename, digest])

    def _on_end(self) -> None:
        self._ended = True
