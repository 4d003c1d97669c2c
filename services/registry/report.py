"""Everything known about a version, gathered for display: scores by class, roles, forgetting
against the parent and against the best earlier version, lineage, aliases and the promotion
decision (recomputed from stored data with the current settings)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.config import Settings
from services.db.models import Model, ModelVersion
from services.evaluation.metrics import forgetting
from services.registry.aliases import PRODUCTION, aliases_by_version, get_alias
from services.registry.models import promotion_policy
from services.registry.policy import Candidate, PromotionDecision, decide
from services.registry.versions import ious_of, lineage, resolve_version


@dataclass(frozen=True)
class ClassReport:
    index: int
    name: str
    role: str  # "old": a class of the parent; "new": added by this version
    iou: float | None  # None: not scored (absent from its validation data)
    tp: int | None
    fp: int | None
    fn: int | None
    forgetting: float | None  # parent IoU - this IoU
    forgetting_best: float | None  # best IoU of any earlier version in the lineage - this IoU


@dataclass(frozen=True)
class VersionReport:
    version: ModelVersion
    lineage: list[int]
    classes: list[ClassReport]
    aliases: list[str]
    promotion: PromotionDecision


def describe_version(session: Session, settings: Settings, model: Model, ref: str | int) -> VersionReport:
    """The report of a version of ``model`` given by number or alias; VersionNotFound if there is none."""
    row = resolve_version(session, model.id, ref)
    chain = lineage(session, model.id, row.version)
    parent = chain[-2] if len(chain) > 1 else None
    old = {int(k) for k in parent.class_map} if parent else set()
    return VersionReport(
        version=row,
        lineage=[v.version for v in chain],
        classes=_class_reports(row, chain, old),
        aliases=aliases_by_version(session, model.id).get(row.version, []),
        promotion=recorded_decision(session, settings, model, row, parent),
    )


def recorded_decision(session: Session, settings: Settings, model: Model, row: ModelVersion,
                      parent: ModelVersion | None) -> PromotionDecision:
    """The promotion decision taken when ``row`` was recorded (``parent``: its parent's row). Rows
    older than stored decisions have none: theirs is recomputed with the current settings."""
    if row.promotion:
        return PromotionDecision.from_dict(row.promotion)
    old = sorted(int(k) for k in parent.class_map) if parent else []
    names = {int(k): v for k, v in row.class_map.items()}
    candidate = Candidate(row.version, row.parent_version, get_alias(session, model.id, PRODUCTION), old,
                          ious_of(row), ious_of(parent) if parent else {}, names)
    return decide(promotion_policy(settings, model), candidate)


def _class_reports(row: ModelVersion, chain: list[ModelVersion], old: set[int]) -> list[ClassReport]:
    scored = {m.class_index: m for m in row.metrics}
    best = forgetting([ious_of(v) for v in chain])
    out = []
    for index, name in sorted((int(k), v) for k, v in row.class_map.items()):
        m = scored.get(index)
        out.append(ClassReport(
            index=index, name=name, role="old" if index in old else "new",
            iou=m.iou if m else None, tp=m.tp if m else None, fp=m.fp if m else None, fn=m.fn if m else None,
            forgetting=m.forgetting if m else None, forgetting_best=best.get(index),
        ))
    return out
