"""Unpacking an uploaded zip without trusting it.

Every entry is checked before a byte is extracted (no absolute path, no ``..``, no symlink or
other special file, no encryption, declared sizes within the limit), then entries are streamed
out one chunk at a time while the bytes actually produced are counted, so a zip bomb is stopped at
the limit however its headers lie. ``open_archive`` checks and extracts any layout (the annotation
tools' exports, services/data/formats/); ``unpack`` is the ``images/`` + ``masks/`` layout, whose
stray entries are refused before anything is extracted.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.data.upload import ReceivedFile, UploadRejected, UploadTooLarge

FOLDERS = ("images", "masks")
CHUNK = 1024 * 1024
MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class ArchiveLimits:
    """max_bytes: the most decompressed bytes in all; max_ratio: the most decompressed bytes per
    byte of archive. The tighter of the two applies."""

    max_bytes: int
    max_ratio: int

    def for_archive(self, archive_size: int) -> int:
        return min(self.max_bytes, self.max_ratio * max(archive_size, 1))


def unpack(archive: ReceivedFile, dest: Path, limits: ArchiveLimits) -> dict[str, list[ReceivedFile]]:
    """Extract an ``images/`` + ``masks/`` archive into ``dest``; {"images": [...], "masks": [...]},
    each file named by its path in the archive (``images/0001.jpg``) so errors can point at it."""
    with open_archive(archive, limits) as opened:
        for name in opened.entries:
            check_masks_layout(name)
        found: dict[str, list[ReceivedFile]] = {folder: [] for folder in FOLDERS}
        for name, received in opened.extract(dest).items():
            found[name.split("/", 1)[0]].append(received)
    return found


def check_masks_layout(name: str) -> None:
    """Refuse an entry of an ``images/`` + ``masks/`` archive that is not directly in one of them."""
    parts = name.rstrip("/").split("/")
    if name.endswith("/"):
        if len(parts) != 1 or parts[0] not in FOLDERS:
            raise UploadRejected(f"archive entry {name!r} is outside images/ and masks/")
        return
    if len(parts) != 2 or parts[0] not in FOLDERS or parts[1] in ("", "."):
        where = "nested inside" if len(parts) > 2 and parts[0] in FOLDERS else "outside"
        raise UploadRejected(
            f"archive entry {name!r} is {where} images/ and masks/: put files directly in those two folders")


class OpenedArchive:
    """A zip whose entries all passed the safety checks; ``entries``: every name, folders too
    (ending in ``/``), in archive order."""

    def __init__(self, zf: zipfile.ZipFile, name: str, limit: int) -> None:
        self._zf, self.name, self.limit = zf, name, limit
        self._infos = _checked_entries(zf, name, limit)
        self.entries = [entry for _, entry in self._infos]

    def extract(self, dest: Path) -> dict[str, ReceivedFile]:
        """Every file entry, streamed to ``dest`` under a generated name: {archive path: file}."""
        dest.mkdir(parents=True, exist_ok=True)
        out: dict[str, ReceivedFile] = {}
        written = 0
        for i, (info, name) in enumerate(self._infos):
            if not info.is_dir():
                out[name], written = _extract(self._zf, info, name, dest / f"entry-{i:06d}", written, self.limit)
        return out


@contextmanager
def open_archive(archive: ReceivedFile, limits: ArchiveLimits) -> Iterator[OpenedArchive]:
    try:
        zf = zipfile.ZipFile(archive.path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UploadRejected(f"archive {archive.name!r} is not a readable zip file: {err}") from None
    with zf:
        yield OpenedArchive(zf, archive.name, limits.for_archive(archive.size))


def _checked_entries(zf: zipfile.ZipFile, archive_name: str, limit: int) -> list[tuple[zipfile.ZipInfo, str]]:
    """(info, normalised name) of every entry, after checking them all."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise UploadRejected(f"archive {archive_name!r} has {len(infos)} entries; the limit is {MAX_ENTRIES}")
    entries, seen, declared = [], set(), 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        _check_entry(info, name)
        if name in seen:
            raise UploadRejected(f"archive entry {name!r} appears twice")
        seen.add(name)
        entries.append((info, name))
        declared += info.file_size
        if declared > limit:
            raise _too_large(limit)
    return entries


def _check_entry(info: zipfile.ZipInfo, name: str) -> None:
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise UploadRejected(f"archive entry {name!r} has an absolute path")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise UploadRejected(f"archive entry {name!r} contains '..'")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise UploadRejected(f"archive entry {name!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UploadRejected(f"archive entry {name!r} is not a regular file")
    if info.flag_bits & 0x1:
        raise UploadRejected(f"archive entry {name!r} is encrypted")


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, path: Path,
             written: int, limit: int) -> tuple[ReceivedFile, int]:
    """Stream one entry to ``path``; returns the file and the running total of bytes written."""
    hasher, size = hashlib.sha256(), 0
    try:
        with zf.open(info) as src, path.open("wb") as out:
            while chunk := src.read(CHUNK):
                size += len(chunk)
                if written + size > limit:
                    raise _too_large(limit)
                hasher.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
        raise UploadRejected(f"archive entry {name!r} cannot be extracted: {err}") from None
    return ReceivedFile(name=name, path=path, size=size, sha256=hasher.hexdigest()), written + size


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"the archive decompresses to more than {limit} bytes, the limit for this upload (at most "
        "STRATA_MAX_ARCHIVE_RATIO times the archive's size, and 4 x STRATA_MAX_UPLOAD_BYTES)")
