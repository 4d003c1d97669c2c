"""Model versions: listing, lookup, lineage, recording a newly trained version and deleting one.

Version numbers count 1, 2, ... within each model; every function takes the model's id.

``record_version`` is what the worker calls inside its ONE final transaction: it stores the
version and its per-class metrics, computes mIoU old/new/all and forgetting against the parent,
applies the promotion policy and moves the aliases. The caller commits (or rolls back: then no
trace of the version is left).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from services.config import Settings, get_settings
from services.db.models import Alias, ClassMetric, Model, ModelVersion, SemanticClass, Task
from services.evaluation.metrics import forgetting_vs, iou_from_counts, mean
from services.registry.aliases import ALIAS_PATTERN, LATEST, PRODUCTION, get_alias, set_alias
from services.registry.errors import InvalidVersionRecord, VersionInUse, VersionNotFound
from services.registry.exports import delete_exports
from services.registry.models import pending_task_ids, promotion_policy
from services.registry.policy import Candidate, PromotionDecision, decide
from services.webhooks import events

IOU_TOLERANCE = 1e-6
Score = tuple[float | None, int, int, int]  # (iou or None, tp, fp, fn)
MAX_VERSION = 2**31 - 1  # the column is a 32-bit integer on every database
_NUMBER = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() also accepts '²'
# What may name a version in a URL: its number or an alias (checked at the edge: anything else is a 422).
VERSION_REF_PATTERN = f"^([0-9]{{1,10}}|{ALIAS_PATTERN})$"


def ious_of(version: ModelVersion) -> dict[int, float | None]:
    """{class index: IoU or None} of a version's stored metrics."""
    return {m.class_index: m.iou for m in version.metrics}


def _mean_of(ious: Mapping[int, float | None], classes: Iterable[int]) -> float | None:
    return mean(ious.get(c) for c in classes)


def list_versions(session: Session, model_id: int) -> list[ModelVersion]:
    stmt = select(ModelVersion).where(ModelVersion.model_id == model_id)
    return list(session.scalars(stmt.order_by(ModelVersion.version)))


def get_version(session: Session, model_id: int, version: int) -> ModelVersion:
    row = session.get(ModelVersion, (model_id, version)) if 1 <= version <= MAX_VERSION else None
    if row is None:
        raise VersionNotFound(f"model version {version} does not exist ({_known(session, model_id)})")
    return row


def parse_version_number(ref: str | int) -> int | None:
    """The version number ``ref`` spells (ASCII digits), or None when it is not a number."""
    if isinstance(ref, int):
        return ref
    return int(ref) if _NUMBER.fullmatch(ref) else None


def resolve_version(session: Session, model_id: int, ref: str | int) -> ModelVersion:
    """A version of the model by number ("3", 3) or by alias name ("production")."""
    number = parse_version_number(ref)
    if number is not None:
        return get_version(session, model_id, number)
    version = get_alias(session, model_id, str(ref))
    if version is None:
        raise VersionNotFound(f"{str(ref)[:80]!r} is neither a version number nor a set alias "
                              f"({_known(session, model_id)})")
    return get_version(session, model_id, version)


def _known(session: Session, model_id: int) -> str:
    stmt = select(ModelVersion.version).where(ModelVersion.model_id == model_id).order_by(ModelVersion.version)
    versions = list(session.scalars(stmt))
    if not versions:
        return "the model has no version yet"
    shown = ", ".join(map(str, versions[-10:]))
    aliases = list(session.scalars(select(Alias.name).where(Alias.model_id == model_id).order_by(Alias.name)))
    return f"known versions: {'..., ' if len(versions) > 10 else ''}{shown}; aliases: {', '.join(aliases) or 'none'}"


def next_version_number(session: Session, model_id: int) -> int:
    """Above every version the model has, and every one it ever had (numbers are never reused)."""
    newest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model_id)) or 0
    last = session.scalar(select(Model.last_version).where(Model.id == model_id)) or 0
    return max(newest, last) + 1


def lineage(session: Session, model_id: int, version: int) -> list[ModelVersion]:
    """The versions from the lineage's base model down to ``version`` (inclusive)."""
    chain = [get_version(session, model_id, version)]
    while chain[-1].parent_version is not None:
        chain.append(get_version(session, model_id, chain[-1].parent_version))
    return chain[::-1]


def training_durations(session: Session) -> list[tuple[str, float]]:
    """(model name, seconds from start to finish) of each task that produced a version."""
    rows = session.execute(
        select(Model.name, Task.started_at, Task.finished_at).join(ModelVersion, ModelVersion.task_id == Task.id)
        .join(Model, Model.id == Task.model_id)
        .where(Task.started_at.is_not(None), Task.finished_at.is_not(None))
    )
    return [(name, (end - start).total_seconds()) for name, start, end in rows]


@dataclass(frozen=True)
class VersionObjects:
    """The objects a deleted version's rows named: to delete once the deletion is committed."""

    checkpoint: str
    exports: list[str]

    @property
    def keys(self) -> list[str]:
        return [self.checkpoint, *self.exports]


def delete_version(session: Session, model_id: int, version: int) -> VersionObjects:
    """Delete a version, its metrics, its exports' records and the people's aliases naming it;
    returns the objects they named, to delete once committed. ``latest`` moves back to the newest
    remaining version.

    Refused (VersionInUse) for the production version, a version others descend from, and while
    the model has queued or running tasks (one of them may be about to start from it)."""
    row = get_version(session, model_id, version)
    if get_alias(session, model_id, PRODUCTION) == version:
        raise VersionInUse(f"version {version} is in production: promote another version first")
    children = list(session.scalars(select(ModelVersion.version).where(
        ModelVersion.model_id == model_id, ModelVersion.parent_version == version).order_by(ModelVersion.version)))
    if children:
        raise VersionInUse(f"version {version} is the parent of version(s) {', '.join(map(str, children))}: "
                           "a lineage keeps its ancestors")
    pending = len(pending_task_ids(session, model_id))
    if pending:
        raise VersionInUse(f"the model has {pending} queued or running task(s), which may start from version "
                           f"{version}: wait for them or cancel them first")
    # The tasks that produced it, or (failed or cancelled: pending ones were refused above) started
    # or were to start from it, forget it: their foreign keys would refuse the deletion otherwise.
    for task in session.scalars(select(Task).where(
            Task.model_id == model_id, or_(Task.model_version == version, Task.parent_version == version))):
        if task.model_version == version:
            task.model_version = None
        if task.parent_version == version:
            task.parent_version = None
    session.execute(delete(Alias).where(Alias.model_id == model_id, Alias.version == version))
    objects = VersionObjects(row.checkpoint_key, delete_exports(session, model_id, version))
    session.delete(row)
    session.flush()
    newest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model_id))
    if newest is not None:
        set_alias(session, model_id, LATEST, newest)
    return objects


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
    model_id = task.model_id
    classes = _check_class_map(session, model_id, class_map)
    parent = get_version(session, model_id, parent_version) if parent_version is not None else None
    old, new = _check_roles(classes, parent, old_classes, new_classes)
    scores = _check_metrics(classes, metrics)
    ious = {c: s[0] for c, s in scores.items()}
    parent_ious = ious_of(parent) if parent else {}
    forgetting = forgetting_vs(parent_ious, ious)
    row = ModelVersion(
        model_id=model_id, version=version or next_version_number(session, model_id),
        parent_version=parent_version, task_id=task.id,
        architecture=architecture, method=method, hyperparameters=dict(hyperparameters),
        class_map={str(k): v for k, v in classes.items()}, num_classes=len(classes),
        checkpoint_key=checkpoint_key, checkpoint_sha256=checkpoint_sha256, checkpoint_bytes=checkpoint_bytes,
        miou_old=_mean_of(ious, old), miou_new=_mean_of(ious, new), miou_all=_mean_of(ious, classes),
        metrics=[ClassMetric(class_index=c, iou=iou, tp=tp, fp=fp, fn=fn, forgetting=forgetting.get(c))
                 for c, (iou, tp, fp, fn) in sorted(scores.items())],
    )
    session.add(row)
    session.flush()  # the version must exist before the task and aliases point at it
    model = session.get(Model, model_id)
    model.last_version = max(model.last_version or 0, row.version)
    task.model_version = row.version
    production = get_alias(session, model_id, PRODUCTION, for_update=True)
    candidate = Candidate(row.version, parent_version, production, old, ious, parent_ious, classes)
    policy = promotion_policy(settings or get_settings(), session.get(Model, model_id))
    decision = decide(policy, candidate)
    row.promotion = decision.as_dict()
    events.version_event(session, row)  # before the aliases move: receivers hear of the version first
    set_alias(session, model_id, LATEST, row.version)
    if decision.promote:
        set_alias(session, model_id, PRODUCTION, row.version)
    return row, decision


def _check_class_map(session: Session, model_id: int, class_map: Mapping[int | str, str]) -> dict[int, str]:
    """{int index: name}, each matching a row of the model's classes."""
    try:
        classes = {int(k): v for k, v in class_map.items()}
    except (TypeError, ValueError):
        raise InvalidVersionRecord(f"class_map keys must be class indices, got {sorted(map(str, class_map))}") from None
    if not classes:
        raise InvalidVersionRecord("class_map is empty: a model has at least the background class")
    known = {c.id: c.name for c in session.scalars(
        select(SemanticClass).where(SemanticClass.model_id == model_id, SemanticClass.id.in_(list(classes))))}
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
