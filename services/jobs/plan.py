"""Everything a training step needs from the database, read in one short session: ``StepPlan``.

The plan is plain data, so no session stays open across downloads or training (on SQLite an open
transaction blocks every other writer).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import DatasetItem, SemanticClass, Split, Task
from services.jobs.spec import ResolvedSpec
from services.labels import BACKGROUND_INDEX, BACKGROUND_NAME
from services.registry.versions import lineage


@dataclass(frozen=True)
class ItemRef:
    task_id: str
    image_key: str
    image_sha256: str
    mask_key: str
    mask_sha256: str


@dataclass(frozen=True)
class ParentRef:
    model_id: int
    version: int
    architecture: str
    class_map: dict[int, str]
    checkpoint_key: str
    checkpoint_sha256: str
    depth: int  # versions from the lineage's base model to this one, itself included


@dataclass(frozen=True)
class ScoringTask:
    """A task that introduced classes of the new version: they are scored on its validation images."""

    task_id: str
    spec: ResolvedSpec
    introduced: list[int]
    val_items: list[ItemRef]


@dataclass(frozen=True)
class StepPlan:
    task_id: str
    model_id: int
    spec: ResolvedSpec
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

    @property
    def step_index(self) -> int:
        """The step's place in its lineage: 0 for a base model."""
        return self.parent.depth if self.parent else 0


def items_of(session: Session, task_id: str, split: Split | str) -> list[ItemRef]:
    stmt = select(DatasetItem).where(DatasetItem.task_id == task_id, DatasetItem.split == split)
    return [ItemRef(i.task_id, i.image_key, i.image_sha256, i.mask_key, i.mask_sha256)
            for i in session.scalars(stmt.order_by(DatasetItem.stem))]


def build_plan(session: Session, task_id: str, parent_version: int | None) -> StepPlan:
    task = session.get(Task, task_id)
    spec = ResolvedSpec.of(task)
    chain = lineage(session, task.model_id, parent_version) if parent_version is not None else []
    parent = None
    if chain:
        row = chain[-1]
        parent = ParentRef(row.model_id, row.version, row.architecture, {int(k): v for k, v in row.class_map.items()},
                           row.checkpoint_key, row.checkpoint_sha256, depth=len(chain))
        class_map = {**parent.class_map}
        architecture = parent.architecture
    else:
        class_map = {BACKGROUND_INDEX: BACKGROUND_NAME}
        architecture = spec.architecture
    class_map.update({i: name for name, i in spec.assigned_classes.items()})
    root_task = chain[0].task_id if chain else task.id  # the lineage's first task: where background is scored
    return StepPlan(
        task_id=task.id, model_id=task.model_id, spec=spec, parent=parent, architecture=architecture,
        class_map=dict(sorted(class_map.items())),
        train_items=items_of(session, task.id, Split.TRAIN),
        scoring=_scoring_tasks(session, task.model_id, class_map, root_task),
    )


def _scoring_tasks(session: Session, model_id: int, class_map: dict[int, str], root_task: str) -> list[ScoringTask]:
    introduced: dict[str, list[int]] = {}
    rows = session.scalars(select(SemanticClass).where(SemanticClass.model_id == model_id,
                                                       SemanticClass.id.in_(list(class_map))))
    for row in rows:
        if row.task_id is not None:
            introduced.setdefault(row.task_id, []).append(row.id)
    introduced.setdefault(root_task, []).append(BACKGROUND_INDEX)
    return [ScoringTask(tid, ResolvedSpec.of(session.get(Task, tid)), sorted(indices),
                        items_of(session, tid, Split.VAL))
            for tid, indices in introduced.items()]
