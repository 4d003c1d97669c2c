"""Model versions: listing, lookup, lineage, and recording a newly trained version.

``record_version`` is what the worker calls inside its ONE final transaction: it stores the
version and its per-class metrics, computes mIoU old/new/all and forgetting against the parent,
applies the promotion policy and moves the aliases. The caller commits (or rolls back: then no
trace of the version is left).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.config import Settings, get_settings
from services.db.models import ClassMetric, ModelVersion, SemanticClass, Task
from services.evaluation.metrics import forgetting_vs, iou_from_counts, mean
from services.registry.aliases import LATEST, PRODUCTION, get_alias, set_alias
from services.registry.errors import InvalidVersionRecord, VersionNotFound
from services.registry.policy import Candidate, PromotionDecision, PromotionPolicy, decide

IOU_TOLERANCE = 1e-6
Score = tuple[float | None, int, int, int]  # (iou or None, tp, fp, fn)


def ious_of(version: ModelVersion) -> dict[int, float | None]:
    """{class index: IoU or None} of a version's stored metrics."""
    return {m.class_index: m.iou for m in version.metrics}


def _mean_of(ious: Mapping[int, float | None], classes: Iterable[int]) -> float | None:
    return mean(ious.get(c) for c in classes)


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.version)))


def get_version(session: Session, version: int) -> ModelVersion:
    row = session.get(ModelVersion, version)
    if row is None:
        raise VersionNotFound(f"model version {version} does not exist ({_known(session)})")
    return row


def resolve_version(session: Session, ref: str | int) -> ModelVersion:
    """A version by number ("3", 3) or by alias name ("production")."""
    if isinstance(ref, int) or str(ref).isdigit():
        return get_version(session, int(ref))
    version = get_alias(session, str(ref))
    if version is None:
        raise VersionNotFound(f"{ref!r} is neither a version number nor a set alias ({_known(session)})")
    return get_version(session, version)


def _known(session: Session) -> str:
    versions = [v for (v,) in session.execute(select(ModelVersion.version).order_by(ModelVersion.version))]
    if not versions:
        return "no version exists yet"
    shown = ", ".join(map(str, versions[-10:]))
    return f"known versions: {'..., ' if len(versions) > 10 else ''}{shown}"


def next_version_number(session: Session) -> int:
    return (session.scalar(select(func.max(ModelVersion.version))) or 0) + 1


def lineage(session: Session, version: int) -> list[ModelVersion]:
    """The versions from the lineage's base model down to ``version`` (inclusive)."""
    chain = [get_version(session, version)]
    while chain[-1].parent_version is not None:
        chain.append(get_version(session, chain[-1].parent_version))
    return chain[::-1]


def training_durations(session: Session) -> list[float]:
    """Seconds from start to finish of each task that produced a version."""
    rows = session.execute(
        select(Task.started_at, Task.finished_at).join(ModelVersion, ModelVersion.task_id == Task.id)
        .where(Task.started_at.is_not(None), Task.finished_at.is_not(None))
    )
    return [(end - start).total_seconds() for start, end in rows]


def record_version(
    session: Session,
    *,
    task: Task,
    parent_version: int | None,
    architecture: str,
    method: str,
    hyperparameters: Mapping[str, Any],
    class_map: Mapping[int | str, str],
    checkpoint_key: str,
    checkpoint_sha256: str,
    checkpoint_bytes: int,
    metrics: Mapping[int, Score],
    old_classes: Iterable[int],
    new_classes: Iterable[int],
    version: int | None = None,
    settings: Settings | None = None,
) -> tuple[ModelVersion, PromotionDecision]:
    """Store a trained version with its metrics, apply the promotion policy, move the aliases.

    ``class_map``: {global class index: name} of the model's channels (keys may be strings, as
    JSON has them). ``metrics``: {class index: (IoU or None, tp, fp, fn)} for the classes that
    could be scored. ``old_classes`` must be the parent's classes, ``new_classes`` the rest.
    ``version`` defaults to the next free number; ``settings`` (for the policy) to the process's.
    Sets ``task.model_version``; the caller sets the task's status and commits.
    """
    classes = _check_class_map(session, class_map)
    parent = get_version(session, parent_version) if parent_version is not None else None
    old, new = _check_roles(classes, parent, old_classes, new_classes)
    scores = _check_metrics(classes, metrics)
    ious = {c: s[0] for c, s in scores.items()}
    parent_ious = ious_of(parent) if parent else {}
    forgetting = forgetting_vs(parent_ious, ious)
    row = ModelVersion(
        version=version or next_version_number(session), parent_version=parent_version, task_id=task.id,
        architecture=architecture, method=method, hyperparameters=dict(hyperparameters),
        class_map={str(k): v for k, v in classes.items()}, num_classes=len(classes),
        checkpoint_key=checkpoint_key, checkpoint_sha256=checkpoint_sha256, checkpoint_bytes=checkpoint_bytes,
        miou_old=_mean_of(ious, old), miou_new=_mean_of(ious, new), miou_all=_mean_of(ious, classes),
        metrics=[ClassMetric(class_index=c, iou=iou, tp=tp, fp=fp, fn=fn, forgetting=forgetting.get(c))
                 for c, (iou, tp, fp, fn) in sorted(scores.items())],
    )
    session.add(row)
    session.flush()  # the version must exist before the task and aliases point at it
    task.model_version = row.version
    production = get_alias(session, PRODUCTION, for_update=True)
    candidate = Candidate(row.version, parent_version, production, old, ious, parent_ious, classes)
    decision = decide(PromotionPolicy.from_settings(settings or get_settings()), candidate)
    row.promotion = decision.as_dict()
    set_alias(session, LATEST, row.version)
    if decision.promote:
        set_alias(session, PRODUCTION, row.version)
    return row, decision


def _check_class_map(session: Session, class_map: Mapping[int | str, str]) -> dict[int, str]:
    """{int index: name}, each matching a row of the classes table."""
    try:
        classes = {int(k): v for k, v in class_map.items()}
    except (TypeError, ValueError):
        raise InvalidVersionRecord(f"class_map keys must be class indices, got {sorted(map(str, class_map))}") from None
    if not classes:
        raise InvalidVersionRecord("class_map is empty: a model has at least the background class")
    known = {c.id: c.name for c in session.scalars(select(SemanticClass).where(SemanticClass.id.in_(list(classes))))}
    for index, name in sorted(classes.items()):
        if index not in known:
            raise InvalidVersionRecord(f"class_map names class {index} ({name!r}), which is not in the classes table")
        if known[index] != name:
            raise InvalidVersionRecord(
                f"class_map calls class {index} {name!r} but the classes table calls it {known[index]!r}")
    return dict(sorted(classes.items()))


def _check_roles(classes: Mapping[int, str], parent: ModelVersion | None,
                 old_classes: Iterable[int], new_classes: Iterable[int]) -> tuple[list[int], list[int]]:
    old, new = sorted(set(map(int, old_classes))), sorted(set(map(int, new_classes)))
    expected_old = sorted(int(k) for k in parent.class_map) if parent else []
    if old != expected_old:
        raise InvalidVersionRecord(f"old_classes {old} must be the parent's classes {expected_old}")
    if sorted(old + new) != sorted(classes) or set(old) & set(new):
        raise InvalidVersionRecord(
            f"old_classes {old} and new_classes {new} must split the class map {sorted(classes)} between them")
    return old, new


def _check_metrics(classes: Mapping[int, str], metrics: Mapping[int, Score]) -> dict[int, Score]:
    unknown = sorted(set(map(int, metrics)) - set(classes))
    if unknown:
        raise InvalidVersionRecord(f"metrics given for classes {unknown} that are not in the class map")
    return {int(c): _check_score(int(c), score) for c, score in metrics.items()}


def _check_score(index: int, score: Score) -> Score:
    try:
        iou, tp, fp, fn = score
    except (TypeError, ValueError):
        raise InvalidVersionRecord(f"class {index}: a score is (iou or None, tp, fp, fn), got {score!r}") from None
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in (tp, fp, fn)):
        raise InvalidVersionRecord(f"class {index}: tp, fp, fn must be non-negative integers, got {(tp, fp, fn)}")
    expected = iou_from_counts(tp, fp, fn)
    if iou is None:
        if expected is not None:
            raise InvalidVersionRecord(f"class {index}: IoU is None but tp + fp + fn = {tp + fp + fn} > 0")
        return None, tp, fp, fn
    if not isinstance(iou, (int, float)) or not math.isfinite(iou) or not 0.0 <= iou <= 1.0:
        raise InvalidVersionRecord(f"class {index}: IoU must be a number in [0, 1] or None, got {iou!r}")
    if expected is None or abs(iou - expected) > IOU_TOLERANCE:
        raise InvalidVersionRecord(
            f"class {index}: IoU {iou} does not match tp / (tp + fp + fn) = {tp}/{tp + fp + fn}")
    return float(iou), tp, fp, fn
