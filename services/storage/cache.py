"""This machine's copies of stored objects, and where each kind lives under ``cache_dir``.

- ``datasets/{task_id}/...``: a task's images and masks, at their object keys;
- ``checkpoints/{model_id}/{version}/model.pt``: a version's model file (the worker's parent model,
  the API's served versions);
- ``exports/{model_id}/{version}/{file name}``: a version exported for another runtime (the API's
  and ``strata export``'s copies of what the store caches);
- ``train/{task_id}/``: a running task's training state (its newest epoch checkpoint).

A copy is used only while its sha256 matches the one recorded at upload; otherwise it is fetched
again. Copies are kept between attempts, so a redelivered task does not download again.
"""

from __future__ import annotations

from pathlib import Path

from services.storage.base import ObjectStore
from services.storage.errors import IntegrityError
from services.storage.keys import validate_key
from services.storage.streams import file_sha256


def object_path(cache_dir: Path, key: str) -> Path:
    """Where the copy of the object ``key`` lives (keys are validated: they cannot escape)."""
    return Path(cache_dir) / validate_key(key)


def checkpoint_path(cache_dir: Path, model_id: int, version: int) -> Path:
    """Where a version's model file is kept, whatever its object key."""
    return Path(cache_dir) / "checkpoints" / str(int(model_id)) / str(int(version)) / "model.pt"


def export_dir(cache_dir: Path, model_id: int, version: int) -> Path:
    """Where a version's exports are kept (and built)."""
    return Path(cache_dir) / "exports" / str(int(model_id)) / str(int(version))


def export_path(cache_dir: Path, model_id: int, version: int, filename: str) -> Path:
    """Where one of a version's exports is kept; ``filename`` says which (``onnx-{sha256[:16]}.onnx``)."""
    if Path(filename).name != filename or filename in (".", ".."):
        raise ValueError(f"an export's file name must be a plain name, got {filename!r}")
    return export_dir(cache_dir, model_id, version) / filename


def training_dir(cache_dir: Path, task_id: str) -> Path:
    """Where a running task's training state is written after every epoch."""
    return Path(cache_dir) / "train" / task_id


def fetch(store: ObjectStore, key: str, sha256: str, path: Path) -> Path:
    """``path``, holding the object ``key`` whose sha256 must be ``sha256``: kept when it already
    does, downloaded otherwise. Raises IntegrityError when the stored object is not that one."""
    path = Path(path)
    if path.is_file() and file_sha256(path) == sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    info = store.download(key, path)
    if info.sha256 and info.sha256 != sha256:
        path.unlink(missing_ok=True)
        raise IntegrityError(f"object {key} has sha256 {info.sha256}, but {sha256} was recorded at upload")
    return path
