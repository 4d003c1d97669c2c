"""Unpacking an uploaded zip of ``images/`` and ``masks/`` without trusting it.

Every entry is checked before a byte is extracted (no absolute path, no ``..``, no symlink or
other special file, nothing outside ``images/`` and ``masks/``, no encryption, declared sizes
within the limit), then entries are streamed out one chunk at a time while the bytes actually
produced are counted, so a zip bomb is stopped at the limit however its headers lie.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
import zlib
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
    """Extract the archive's files into ``dest``; {"images": [...], "masks": [...]}, each file
    named by its path in the archive (``images/0001.jpg``) so errors can point at it."""
    limit = limits.for_archive(archive.size)
    try:
        zf = zipfile.ZipFile(archive.path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UploadRejected(f"archive {archive.name!r} is not a readable zip file: {err}") from None
    with zf:
        entries = _checked_entries(zf, archive.name, limit)
        dest.mkdir(parents=True, exist_ok=True)
        found: dict[str, list[ReceivedFile]] = {folder: [] for folder in FOLDERS}
        written = 0
        for i, (info, name, folder) in enumerate(entries):
            received, written = _extract(zf, info, name, dest / f"entry-{i:06d}", written, limit)
            found[folder].append(received)
    return found


def _checked_entries(zf: zipfile.ZipFile, archive_name: str, limit: int) -> list[tuple[zipfile.ZipInfo, str, str]]:
    """(info, normalised name, folder) of every file entry, after checking them all."""
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
        if info.is_dir():
            continue
        entries.append((info, name, name.split("/", 1)[0]))
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
    if info.is_dir():
        if len(parts) != 1 or parts[0] not in FOLDERS:
            raise UploadRejected(f"archive entry {name!r} is outside images/ and masks/")
        return
    if len(parts) != 2 or parts[0] not in FOLDERS or parts[1] in ("", "."):
        where = "nested inside" if len(parts) > 2 and parts[0] in FOLDERS else "outside"
        raise UploadRejected(
            f"archive entry {name!r} is {where} images/ and masks/: put files directly in those two folders")


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
