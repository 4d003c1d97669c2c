"""A version's exports, built once and cached in the object store: ``export_version``.

The first request for a (version, format) loads the version's checkpoint as serving does
(``predictor.load_version_model``: sha256 checked), writes the file and checks it in its runtime
(``services/inference/export.py``), stores it under a key holding its digest, then records it
(``registry/exports.py``); later requests, from any process, find the row and fetch the object.
A Triton repository is zipped from the version's (cached) ONNX export.

Within a process, one request builds a given export while the others for it wait and then find it
recorded. Two processes building at once both store (distinct keys when their bytes differ) and the
second to record keeps the first's row and deletes its own object. A row whose object is gone, or
that was written under another ``CONTRACT``, is built again. The local copy that is served lives
under ``{cache_dir}/exports/`` (``storage/cache.export_path``), checked against the row's sha256
like every cached object.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.db.models import ExportFormat
from services.db.session import session_scope
from services.inference.export import (
    CONTRACT,
    EXTENSIONS,
    MEDIA_TYPES,
    ExportGraph,
    contract,
    write_file,
    write_triton,
)
from services.inference.predictor import VersionSpec, load_version_model
from services.learning.classmap import channels_of
from services.registry.errors import VersionNotFound
from services.registry.exports import ExportRecord, find_export, record_export
from services.registry.versions import get_version, resolve_version
from services.storage import ObjectNotFound, ObjectStore
from services.storage.cache import export_dir, export_path, fetch
from services.storage.keys import export_key
from services.storage.streams import file_sha256

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportFile:
    """A verified local copy of a version's export, and how to hand it over."""

    path: Path
    filename: str  # what a download should be called: "{model}-v{version}.onnx", ...
    media_type: str
    record: ExportRecord
    built: bool  # False when it came from the cache


def export_version(sessions: sessionmaker[Session], store: ObjectStore, cache_dir: Path, model_id: int,
                   model_name: str, ref: str | int, format: ExportFormat,
                   progress: Progress | None = None) -> ExportFile:
    """The version ``ref`` (a number or an alias) of the model as ``format``: from the cache, or
    built, checked, stored and recorded. Raises VersionNotFound, ModelLoadError (its checkpoint
    cannot be loaded), ExportMismatch (the file does not answer like the network: nothing is kept)."""
    say = progress or (lambda _: None)
    with sessions() as session:
        spec = VersionSpec.from_row(resolve_version(session, model_id, ref), model_name)
    with _lock(spec.model_id, spec.version, format):
        with sessions() as session:
            record = find_export(session, spec.model_id, spec.version, format)
        if record is not None and record.contract == CONTRACT:
            try:
                return _local_copy(store, cache_dir, spec, record, built=False)
            except ObjectNotFound:
                log.warning("the %s export of model %r version %s is recorded but its object %s is gone: building "
                            "it again", format, model_name, spec.version, record.key)
        return _build(sessions, store, cache_dir, spec, format, say)


def _build(sessions: sessionmaker[Session], store: ObjectStore, cache_dir: Path, spec: VersionSpec,
           format: ExportFormat, say: Progress) -> ExportFile:
    work = export_dir(cache_dir, spec.model_id, spec.version)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix=".build-") as tmp:
        path = Path(tmp) / f"export{EXTENSIONS[format]}"
        meta = contract(spec)
        if format is ExportFormat.TRITON:
            onnx = export_version(sessions, store, cache_dir, spec.model_id, spec.model_name, spec.version,
                                  ExportFormat.ONNX, say)
            say("writing the Triton model repository")
            write_triton(onnx.path, meta, path)
        else:
            say("loading the checkpoint")
            graph = ExportGraph(load_version_model(spec, store, cache_dir), channels_of(spec.class_map))
            say(f"exporting to {format} and checking it against PyTorch")
            write_file(graph, format, meta, path)
        say("storing it")
        digest = file_sha256(path)
        record = _store(sessions, store, spec, format, path, digest)
        if record.sha256 == digest:  # else another request's export won: fetched below
            os.replace(path, export_path(cache_dir, spec.model_id, spec.version, _local_name(record)))
    log.info("exported model %r version %s as %s: %s (%d bytes)", spec.model_name, spec.version, format, record.key,
             record.bytes)
    return _local_copy(store, cache_dir, spec, record, built=True)


def _store(sessions: sessionmaker[Session], store: ObjectStore, spec: VersionSpec, format: ExportFormat,
           path: Path, sha256: str) -> ExportRecord:
    """Put the file, then record it; returns the record to serve (another request's, if it won)."""
    key = export_key(spec.model_id, spec.version, format.value, sha256, EXTENSIONS[format])
    info = store.put_file(key, path, MEDIA_TYPES[format])
    for attempt in range(2):
        try:
            with session_scope(sessions) as session:
                get_version(session, spec.model_id, spec.version)  # deleted meanwhile: VersionNotFound
                record, unused = record_export(session, spec.model_id, spec.version, format, key=info.key,
                                               sha256=info.sha256, size=info.size, contract=CONTRACT)
            break
        except VersionNotFound:
            _delete(store, [info.key])
            raise
        except IntegrityError:  # another process recorded it first (or deleted the version): look again
            if attempt:
                _delete(store, [info.key])
                raise
    _delete(store, unused)
    return record


def _local_copy(store: ObjectStore, cache_dir: Path, spec: VersionSpec, record: ExportRecord,
                built: bool) -> ExportFile:
    path = export_path(cache_dir, spec.model_id, spec.version, _local_name(record))
    fetch(store, record.key, record.sha256, path)  # kept when its sha256 is the row's
    filename = f"{spec.model_name}-v{spec.version}{'-triton' if record.format is ExportFormat.TRITON else ''}"
    return ExportFile(path, filename + EXTENSIONS[record.format], MEDIA_TYPES[record.format], record, built)


def _local_name(record: ExportRecord) -> str:
    # The digest in the name: a copy being served is never replaced by other bytes.
    return f"{record.format}-{record.sha256[:16]}{EXTENSIONS[record.format]}"


def _delete(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # no row names it: garbage for `strata verify` to report, not an error to answer
            log.exception("could not delete the unused export %s", key)


_locks: dict[tuple[int, int, ExportFormat], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(model_id: int, version: int, format: ExportFormat) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((model_id, version, format), threading.Lock())
