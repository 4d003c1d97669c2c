"""Everything a training step needs from the database, read in one short session.

The plan is plain data, so no session stays open across downloads or training (on SQLite an open
transaction blocks every other writer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import BACKGROUND_CLASS_ID, DatasetItem, ModelVersion, SemanticClass, Split, Task
from services.jobs.data import items_of

DEFAULT_ARCH = "deeplabv3_resnet101"


@dataclass(frozen=True)
class ItemRef:
    task_id: str
    image_key: str
    image_sha256: str
    mask_key: str
    mask_sha256: str


@dataclass(frozen=True)
class ParentRef:
    version: int
    architecture: str
    class_map: dict[int, str]
    checkpoint_key: str
    checkpoint_sha256: str


@dataclass(frozen=True)
class ScoringTask:
    task_id: str
    spec: dict[str, Any]
    assigned: dict[str, int]
    introduced: list[int]
    val_items: list[ItemRef]


@dataclass(frozen=True)
class StepPlan:
    task_id: str
    spec: dict[str, Any]
    assigned: dict[str, int]
    parent: ParentRef | None
    architecture: str
    class_map: dict[int, str]  # the new version's classes: global index -> name
    train_items: list[ItemRef]
    scoring: list[ScoringTask]

    @property
    def old_classes(self) -> list[int]:
        return sorted(self.parent.class_map) if self.parent else []

    @property
    def new_classes(self) -> list[int]:
        return sorted(set(self.class_map) - set(self.old_classes))


def _ref(item: DatasetItem) -> ItemRef:
    return ItemRef(item.task_id, item.image_key, item.image_sha256, item.mask_key, item.mask_sha256)


def assigned_classes(task: Task) -> dict[str, int]:
    return {name: int(i) for name, i in (task.spec or {}).get("assigned_classes", {}).items()}


def build_plan(session: Session, task_id: str, parent_version: int | None) -> StepPlan:
    task = session.get(Task, task_id)
    assigned = assigned_classes(task)
    parent = None
    if parent_version is not None:
        row = session.get(ModelVersion, parent_version)
        parent = ParentRef(row.version, row.architecture, {int(k): v for k, v in row.class_map.items()},
                           row.checkpoint_key, row.checkpoint_sha256)
        class_map = {**parent.class_map}
        architecture = parent.architecture
    else:
        class_map = {BACKGROUND_CLASS_ID: "background"}
        architecture = task.spec.get("model") or DEFAULT_ARCH
    class_map.update({i: name for name, i in assigned.items()})
    return StepPlan(
        task_id=task.id, spec=dict(task.spec), assigned=assigned, parent=parent, architecture=architecture,
        class_map=dict(sorted(class_map.items())),
        train_items=[_ref(i) for i in items_of(session, task.id, Split.TRAIN)],
        scoring=_scoring_tasks(session, task, class_map, parent_version),
    )


def _root_task_id(session: Session, task: Task, parent_version: int | None) -> str:
    """The task that trained the lineage's base model: where background is scored."""
    version = parent_version
    root = task.id
    while version is not None:
        row = session.get(ModelVersion, version)
        root, version = row.task_id, row.parent_version
    return root


def _scoring_tasks(session: Session, task: Task, class_map: dict[int, str], parent_version: int | None) -> list[ScoringTask]:
    introduced: dict[str, list[int]] = {}
    rows = session.scalars(select(SemanticClass).where(SemanticClass.id.in_(list(class_map))))
    for row in rows:
        if row.task_id is not None:
            introduced.setdefault(row.task_id, []).append(row.id)
    introduced.setdefault(_root_task_id(session, task, parent_version), []).append(BACKGROUND_CLASS_ID)
    out = []
    for tid, indices in introduced.items():
        t = session.get(Task, tid)
        out.append(ScoringTask(tid, dict(t.spec), assigned_classes(t), sorted(indices),
                               [_ref(i) for i in items_of(session, tid, Split.VAL)]))
    return out
