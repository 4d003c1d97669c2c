"""A task's images and masks, fetched from the object store to the worker's local cache.

Files are checked against the sha256 recorded at upload and kept between attempts, so a
redelivered task does not download its data again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.data.datasets import SegmentationSource
from services.db.models import DatasetItem, Split
from services.learning.checkpoint import sha256_file
from services.storage import ObjectStore

IDENTITY = np.arange(256, dtype=np.int16)


def items_of(session: Session, task_id: str, split: Split | str) -> list[DatasetItem]:
    stmt = select(DatasetItem).where(DatasetItem.task_id == task_id, DatasetItem.split == split)
    return list(session.scalars(stmt.order_by(DatasetItem.stem)))


def fetch(store: ObjectStore, key: str, sha256: str, path: Path) -> Path:
    if path.is_file() and sha256_file(path) == sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    info = store.download(key, path)
    if info.sha256 and info.sha256 != sha256:
        path.unlink(missing_ok=True)
        raise ValueError(f"object {key} has sha256 {info.sha256}, but {sha256} was recorded at upload")
    return path


def fetch_items(store: ObjectStore, items: Sequence[DatasetItem], cache_dir: Path) -> list[tuple[Path, Path]]:
    """Download (or reuse) every item's image and mask; [(image path, mask path)] in item order."""
    pairs = []
    for item in items:
        base = cache_dir / "datasets" / item.task_id
        image = fetch(store, item.image_key, item.image_sha256, base / "images" / Path(item.image_key).name)
        mask = fetch(store, item.mask_key, item.mask_sha256, base / "masks" / Path(item.mask_key).name)
        pairs.append((image, mask))
    return pairs


def local_source(task_id: str, split: str, pairs: Sequence[tuple[Path, Path]], class_names: Sequence[str]) -> SegmentationSource:
    """A source over stored local masks; relabelling happens through the dataset's lookup table."""
    return SegmentationSource(
        name=f"task {task_id}", split=split, class_names=tuple(class_names), items=tuple(pairs),
        raw_to_class=IDENTITY,
    )
