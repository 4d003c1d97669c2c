"""A version's validation images, for showing a person what it segments (the dashboard): which
items to show, an item's original image, and its ground-truth mask in the model's class indices.

Items are the validation split of the tasks in the version's lineage (the tasks that produced the
versions from its base down to it), taken round-robin across those tasks, newest first, so every
task's classes appear among the first few.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.models import DatasetItem, Model, Split, Task
from services.jobs.errors import ItemNotFound
from services.jobs.spec import ResolvedSpec
from services.labels import BACKGROUND_INDEX, BACKGROUND_NAME, IGNORE_INDEX
from services.learning.classmap import channels_of, local_to_channel_lut
from services.registry.classes import list_classes
from services.registry.versions import lineage, resolve_version
from services.storage import ObjectStore
from services.storage.cache import fetch, object_path

MAX_ITEM_ID = 2**31 - 1  # the column is a 32-bit integer: a larger id names no item (and must not reach SQL)
T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    id: int
    task_id: str
    stem: str
    classes: list[str]  # the classes the item's task introduced, in index order


def lineage_samples(session: Session, model_id: int, ref: str | int, limit: int) -> list[Sample]:
    """Up to ``limit`` validation items of the lineage of version ``ref`` (a number or alias),
    round-robin across its tasks, newest task first; each task's items in upload order."""
    version = resolve_version(session, model_id, ref)
    tasks = [session.get(Task, v.task_id) for v in reversed(lineage(session, model_id, version.version))]
    items = _val_items(session, [t.id for t in tasks], limit)
    classes = {t.id: _introduced(t) for t in tasks}
    picked = round_robin([items.get(t.id, []) for t in tasks], limit)
    return [Sample(id=i.id, task_id=i.task_id, stem=i.stem, classes=classes[i.task_id]) for i in picked]


def round_robin(queues: Sequence[Sequence[T]], limit: int) -> list[T]:
    """The first of every queue, then the second of every queue, ..., at most ``limit`` in all; a
    queue that runs out is passed over."""
    longest = max((len(q) for q in queues), default=0)
    return [q[i] for i in range(longest) for q in queues if i < len(q)][:limit]


def _val_items(session: Session, task_ids: Sequence[str], limit: int) -> dict[str, list[DatasetItem]]:
    """{task id: its first ``limit`` validation items by id}, in one query."""
    rank = func.row_number().over(partition_by=DatasetItem.task_id, order_by=DatasetItem.id).label("rank")
    ranked = (select(DatasetItem.id, rank)
              .where(DatasetItem.task_id.in_(list(task_ids)), DatasetItem.split == Split.VAL.value).subquery())
    stmt = (select(DatasetItem).join(ranked, ranked.c.id == DatasetItem.id)
            .where(ranked.c.rank <= limit).order_by(DatasetItem.id))
    out: dict[str, list[DatasetItem]] = {}
    for item in session.scalars(stmt):
        out.setdefault(item.task_id, []).append(item)
    return out


def _introduced(task: Task) -> list[str]:
    assigned = ResolvedSpec.of(task).assigned_classes
    return sorted(assigned, key=assigned.__getitem__)


# --- one item ------------------------------------------------------------------------------------
def model_item(session: Session, model: Model, item_id: int) -> tuple[DatasetItem, Task]:
    """The dataset item ``item_id`` of one of the model's tasks, with its task. Another model's
    item is as absent as one that never existed."""
    row = None
    if 1 <= item_id <= MAX_ITEM_ID:
        stmt = select(DatasetItem, Task).join(Task).where(DatasetItem.id == item_id, Task.model_id == model.id)
        row = session.execute(stmt).one_or_none()
    if row is None:
        raise ItemNotFound(f"model {model.name!r} has no dataset item {item_id}")
    item, task = row
    return item, task


def item_image(store: ObjectStore, cache_dir: Path, item: DatasetItem) -> tuple[bytes, str]:
    """The image as uploaded, and its media type as Pillow reads it off the bytes."""
    data = _local(store, cache_dir, item.image_key, item.image_sha256).read_bytes()
    with Image.open(io.BytesIO(data)) as im:  # reads the header only
        media_type = Image.MIME.get(im.format or "", "application/octet-stream")
    return data, media_type


def item_mask(session: Session, store: ObjectStore, cache_dir: Path, item: DatasetItem, task: Task) -> np.ndarray:
    """uint8 [H, W]: the item's ground truth in the model's global class indices (0 background,
    255 ignore), from the task's stored local mask."""
    with Image.open(_local(store, cache_dir, item.mask_key, item.mask_sha256)) as im:
        local = np.asarray(im.convert("L"))
    return global_lut(ResolvedSpec.of(task), _class_names(session, task))[local]


def global_lut(spec: ResolvedSpec, classes: Mapping[int, str]) -> np.ndarray:
    """uint8 [256]: a task's local mask value -> global class index, 255 -> 255.

    The training lookup table (``local_to_channel_lut``) over a class map of every class in
    ``classes``: that model's channels are the classes in index order, so channel c is the c-th
    index. One mapping for training and display, so the two cannot disagree."""
    to_channel = local_to_channel_lut(spec.classes, spec.also_labelled, spec.assigned_classes, classes)
    index_of = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    indices = channels_of(classes)
    index_of[:len(indices)] = indices
    return index_of[to_channel]


def _class_names(session: Session, task: Task) -> dict[int, str]:
    """{index: name} of the model's classes and the task's own (still known by its spec when the
    task failed and its class rows went)."""
    known = {c.id: c.name for c in list_classes(session, task.model_id)}
    return {BACKGROUND_INDEX: BACKGROUND_NAME, **known, **{i: n for n, i in ResolvedSpec.of(task).assigned_classes.items()}}


def _local(store: ObjectStore, cache_dir: Path, key: str, sha256: str) -> Path:
    """The object in the local cache the worker also uses (checked against the recorded sha256):
    a page showing the same samples again reads no object store."""
    return fetch(store, key, sha256, object_path(cache_dir, key))
