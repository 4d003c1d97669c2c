"""Scores derived from stored per-class IoU: mean IoU over a class subset and forgetting.

IoU values are fractions in [0, 1] everywhere in storage and the API; "points" (IoU x 100) are
used only where the promotion policy talks to people, as its threshold does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.db.models import ModelVersion
from services.evaluation.metrics import forgetting as best_minus_now

POINTS_PER_IOU = 100.0

ClassIous = Mapping[int, float | None]


def ious_of(version: ModelVersion) -> dict[int, float | None]:
    """{class index: IoU or None} of a version's stored metrics."""
    return {m.class_index: m.iou for m in version.metrics}


def mean_iou(ious: ClassIous, classes: Iterable[int]) -> float | None:
    """Mean IoU over ``classes`` that have a score (None = absent from the data); None if none do."""
    values = [ious[c] for c in classes if ious.get(c) is not None]
    return sum(values) / len(values) if values else None


def forgetting_vs_parent(parent: ClassIous, now: ClassIous) -> dict[int, float]:
    """Per class scored in both: parent IoU minus IoU now (positive = the class got worse)."""
    return {c: parent[c] - now[c] for c in now if parent.get(c) is not None and now[c] is not None}


def forgetting_vs_best(history: Sequence[ClassIous]) -> dict[int, float]:
    """Per class: best IoU of any earlier version in ``history`` minus the last entry's IoU.

    ``history`` runs from the lineage's root to the version of interest (last).
    """
    return best_minus_now(list(history))  # keyed by class index here, by name in experiments


def to_points(value: float | None) -> float | None:
    return None if value is None else value * POINTS_PER_IOU
