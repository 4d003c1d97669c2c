"""Every per-class score of a model's versions in one read: the matrix the dashboard's heat map
draws. Two queries whatever the number of versions (a version's detail walks its lineage, so N
details cost O(N^2) reads)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import ClassMetric, ModelVersion


@dataclass(frozen=True)
class Cell:
    version: int
    index: int
    name: str
    role: str  # "old": a class of the version's parent; "new": added by this version
    iou: float | None  # None: not scored (absent from its validation images)
    forgetting: float | None  # the parent's IoU minus this one (old classes scored in both)


def score_cells(session: Session, model_id: int) -> list[Cell]:
    """One cell per (version, class it knows), in version then class order."""
    stmt = select(ModelVersion.version, ModelVersion.parent_version, ModelVersion.class_map).where(
        ModelVersion.model_id == model_id).order_by(ModelVersion.version)
    versions = {v: (parent, {int(k): name for k, name in class_map.items()}) for v, parent, class_map in
                session.execute(stmt)}
    metrics = {(m.version, m.class_index): m for m in session.scalars(
        select(ClassMetric).where(ClassMetric.model_id == model_id))}
    cells = []
    for version, (parent, classes) in versions.items():
        old = set(versions[parent][1]) if parent is not None else set()  # a parent cannot be deleted
        for index, name in sorted(classes.items()):
            m = metrics.get((version, index))
            cells.append(Cell(version, index, name, "old" if index in old else "new",
                              m.iou if m else None, m.forgetting if m else None))
    return cells
