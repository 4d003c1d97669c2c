"""The filesystem backend: each object is a plain file at ``root/<key>``.

Layout under ``root``::

    <key>                      the object's bytes (``datasets/12/images/0001.jpg``)
    .strata/tmp/               in-flight writes; renamed into place only when complete
    .strata/sha256/ab/<h>.json sidecar per object: its sha256 plus the (inode, size, mtime)
                               of the file it describes; ``h`` = sha1 of the key

A write streams into ``.strata/tmp`` (same filesystem as the objects), is fsynced, and is
moved over the key with ``os.replace``, so readers see the old object or the new one, never a
part.  The sidecar is trusted only while inode, size and mtime still match the file; otherwise
(a crash between the two renames, a file copied in by hand) ``stat`` rehashes the file and
rewrites the sidecar.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat as stat_mod
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from services.storage.base import ObjectInfo, ObjectReader, ObjectStore
from services.storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from services.storage.keys import RESERVED_PREFIX, validate_key, validate_prefix
from services.storage.streams import CHUNK_SIZE, HashingReader, check_sha256

STALE_TEMP_S = 24 * 3600  # ensure_ready() removes temp files older than this (crash leftovers)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc)


class FilesystemStore(ObjectStore):
    """Objects as files under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._tmp = self.root / RESERVED_PREFIX / "tmp"
        self._sidecars = self.root / RESERVED_PREFIX / "sha256"

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    # -- writing ---------------------------------------------------------------------------
    def put(
        self,
        key: str,
        stream: BinaryIO,
        length: int | None = None,
        content_type: str = "application/octet-stream",
        *,
        sha256: str | None = None,
    ) -> ObjectInfo:
        # content_type is not kept: files carry no metadata and nothing reads it back.
        target = self._path(key)
        reader = HashingReader(stream, key, length, check_sha256(sha256) if sha256 else None)
        try:
            fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        except FileNotFoundError:
            raise StorageUnavailable(f"{self!r} is not set up (no {self._tmp}); call ensure_ready()") from None
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := reader.read(CHUNK_SIZE):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            st = os.stat(tmp)
            # Sidecar first: if it cannot be written nothing is committed; if we crash before
            # the rename, it describes an inode that is not the object and is ignored.
            self._write_sidecar(key, reader.hexdigest(), st)
            self._commit(tmp, target, key)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return ObjectInfo(key, st.st_size, reader.hexdigest(), _mtime(st))

    def _commit(self, tmp: str, target: Path, key: str) -> None:
        for _ in range(5):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                return
            except FileNotFoundError:
                continue  # a concurrent delete pruned the (empty) parent directory: retry
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                raise StorageError(
                    f"cannot store {key!r} in {self!r}: another object's key is a prefix of it or "
                    f"it is a prefix of another's ({exc.strerror}: {exc.filename}); the filesystem "
                    "store cannot hold both 'a' and 'a/b'"
                ) from exc
        raise StorageError(f"cannot store {key!r}: its directory kept disappearing under {self!r}")

    # -- reading ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[ObjectReader]:
        path = self._path(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the reader below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self!r}") from None
        with ObjectReader(f, self._info(key, os.fstat(f.fileno()))) as reader:
            yield reader

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self!r}") from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"no object {key!r} in {self!r} ({path} is not a file)")
        info = self._info(key, st)
        if info.sha256 is not None:
            return info
        return self._rehash(key, path)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        # Only the directory holding the prefix's last '/' can contain matches.
        start = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*start.split("/")) if start else self.root
        return self._list(base, start, prefix)

    def _list(self, base: Path, start: str, prefix: str) -> Iterator[ObjectInfo]:
        found = sorted(
            (key, st) for key, st in self._walk(base, start) if key.startswith(prefix)
        )
        for key, st in found:
            yield ObjectInfo(key, st.st_size, None, _mtime(st))

    def _walk(self, directory: Path, rel: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            if not rel and entry.name == RESERVED_PREFIX:
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key)
            elif entry.is_file(follow_symlinks=False):
                try:
                    validate_key(key)  # a file dropped in by hand with an unusable name
                    yield key, entry.stat(follow_symlinks=False)
                except (InvalidKey, FileNotFoundError):
                    continue

    # -- deleting --------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._sidecar_path(key))
        self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        """Remove now-empty directories up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone / raced by a new put): stop here
            directory = directory.parent

    # -- health ----------------------------------------------------------------------------
    def check(self) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"object store root {self.root} does not exist; call ensure_ready()")
        if not self._tmp.is_dir() or not self._sidecars.is_dir():
            raise StorageUnavailable(f"object store root {self.root} is not set up; call ensure_ready()")
        for d in (self.root, self._tmp, self._sidecars):
            if not os.access(d, os.W_OK | os.X_OK):
                raise StorageUnavailable(f"object store directory {d} is not writable by this process")

    def ensure_ready(self) -> None:
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._sidecars.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create object store root {self.root}: {exc}") from exc
        cutoff = time.time() - STALE_TEMP_S
        for entry in os.scandir(self._tmp):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)

    # -- helpers ---------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _sidecar_path(self, key: str) -> Path:
        h = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self._sidecars / h[:2] / f"{h}.json"

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key, st.st_size, self._read_sidecar(key, st), _mtime(st))

    def _read_sidecar(self, key: str, st: os.stat_result) -> str | None:
        try:
            meta = json.loads(self._sidecar_path(key).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or [meta.get("ino"), meta.get("size"), meta.get("mtime_ns")] != [
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
        ]:
            return None  # describes an earlier or unfinished write of this key
        return meta.get("sha256")

    def _write_sidecar(self, key: str, digest: str, st: os.stat_result) -> None:
        path = self._sidecar_path(key)
        path.parent.mkdir(exist_ok=True)
        meta = {"key": key, "sha256": digest, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="sha-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(meta, out)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _rehash(self, key: str, path: Path) -> ObjectInfo:
        """Hash the file through one descriptor, so digest and (inode, size, mtime) agree."""
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                digest = hashlib.sha256()
                while chunk := f.read(CHUNK_SIZE):
                    digest.update(chunk)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self!r}") from None
        with contextlib.suppress(OSError):  # a read-only store still answers stat()
            self._write_sidecar(key, digest.hexdigest(), st)
        return ObjectInfo(key, st.st_size, digest.hexdigest(), _mtime(st))

