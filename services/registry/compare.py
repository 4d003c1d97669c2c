"""Two versions of a model side by side: per-class IoU with deltas, and whether the promotion policy
would let the second replace the first in production (what a person sees before promoting or rolling
back by hand)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.config import Settings
from services.db.models import Model, ModelVersion
from services.registry.aliases import PRODUCTION, get_alias
from services.registry.models import promotion_policy
from services.registry.policy import Candidate, PromotionDecision, judge_replacement
from services.registry.versions import resolve_version


@dataclass(frozen=True)
class ClassDelta:
    index: int
    name: str
    iou_a: float | None  # None: not scored, or (see in_a) not a class of version a
    iou_b: float | None
    delta: float | None  # iou_b - iou_a where both are scored; negative = b is worse
    in_a: bool
    in_b: bool


@dataclass(frozen=True)
class Comparison:
    a: ModelVersion
    b: ModelVersion
    classes: list[ClassDelta]  # the largest drop first, then gains, then classes without a delta
    verdict: PromotionDecision  # may b replace a in production?


def compare_versions(session: Session, settings: Settings, model: Model, ref_a: str | int | None,
                     ref_b: str | int) -> Comparison:
    """Version ``ref_b`` against ``ref_a`` (numbers or aliases; None: ``default_reference``);
    VersionNotFound names a missing one."""
    b = resolve_version(session, model.id, ref_b)
    a = resolve_version(session, model.id, default_reference(session, model.id, b) if ref_a is None else ref_a)
    ious_a, ious_b = _ious(a), _ious(b)
    names = {int(k): v for k, v in a.class_map.items()} | {int(k): v for k, v in b.class_map.items()}
    rows = [ClassDelta(index=k, name=names[k], iou_a=ious_a.get(k), iou_b=ious_b.get(k),
                       delta=_delta(ious_a.get(k), ious_b.get(k)), in_a=k in ious_a, in_b=k in ious_b)
            for k in sorted(names)]
    candidate = Candidate(version=b.version, parent=a.version, production=a.version, old_classes=sorted(ious_a),
                          ious=ious_b, parent_ious=ious_a, names=names)
    return Comparison(a=a, b=b, classes=sorted(rows, key=_largest_drop_first),
                      verdict=judge_replacement(promotion_policy(settings, model), candidate))


def default_reference(session: Session, model_id: int, b: ModelVersion) -> int:
    """What ``b`` is compared with by default: production, unless ``b`` is production or none is
    (then its parent; a base version with nothing in production is compared with itself)."""
    production = get_alias(session, model_id, PRODUCTION)
    if production is not None and production != b.version:
        return production
    return b.parent_version if b.parent_version is not None else b.version


def _ious(row: ModelVersion) -> dict[int, float | None]:
    """{class index: IoU or None} for every class the version knows (scored or not)."""
    scored = {m.class_index: m.iou for m in row.metrics}
    return {int(k): scored.get(int(k)) for k in row.class_map}


def _delta(a: float | None, b: float | None) -> float | None:
    return b - a if a is not None and b is not None else None


def _largest_drop_first(row: ClassDelta) -> tuple[int, float, int]:
    return (0, row.delta, row.index) if row.delta is not None else (1, 0.0, row.index)
