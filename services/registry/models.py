"""Models: named lineages, each with its own classes, versions, aliases, promotion settings and
step order. Creating, finding, changing and deleting them.

A model's name is its handle in URLs (``/models/{name}/...``): unique, URL-safe and fixed once
created (object keys and API keys refer to the model's id, so a rename would be possible later
without moving anything). The caller commits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from services.config import Settings
from services.db.models import (
    PENDING_STATUSES,
    Alias,
    ClassMetric,
    DatasetItem,
    Model,
    ModelVersion,
    SemanticClass,
    Task,
)
from services.errors import Conflict, InvalidInput, NotFound
from services.registry.aliases import LATEST, PRODUCTION
from services.registry.exports import delete_exports
from services.registry.policy import PromotionPolicy
from services.text import reordering_character

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
MAX_DESCRIPTION_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ModelNotFound(NotFound):
    """No model with that name."""


class ModelConflict(Conflict):
    """The model's state forbids the change: the name is taken, tasks are pending, versions exist
    and deletion was not confirmed."""


class InvalidModel(InvalidInput):
    """A model's name or settings are malformed."""


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidModel(f"model name {name!r} is not valid: 1 to 64 characters, letters, digits, '.', '_' "
                           "or '-', starting with a letter or digit (it is used in URLs)")
    return name


def create_model(session: Session, name: str, description: str = "") -> Model:
    check_model_name(name)
    if session.scalar(select(Model.id).where(Model.name == name)) is not None:
        raise ModelConflict(f"a model named {name!r} already exists")
    row = Model(name=name, description=_check_description(description))
    session.add(row)
    session.flush()
    return row


def has_control_characters(text: str) -> bool:
    """True for NUL and the other control characters (PostgreSQL refuses NUL in text), not for line
    breaks and tabs."""
    return _CONTROL.search(text) is not None


def _check_description(text: str | None) -> str:
    text = (text or "").strip()
    if has_control_characters(text):
        raise InvalidModel("description: control characters are not allowed (line breaks and tabs are)")
    reordering = reordering_character(text)
    if reordering:
        raise InvalidModel(f"description: {reordering} is not allowed (it reorders the text after it)")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise InvalidModel(f"description has {len(text)} characters, the limit is {MAX_DESCRIPTION_CHARS}")
    return text


def list_models(session: Session, ids: Iterable[int] | None = None) -> list[Model]:
    """Every model by name; ``ids``: only those (the models an API key may see)."""
    stmt = select(Model).order_by(Model.name)
    if ids is not None:
        stmt = stmt.where(Model.id.in_(list(ids)))
    return list(session.scalars(stmt))


def get_model(session: Session, name: str) -> Model:
    row = session.scalars(select(Model).where(Model.name == name)).one_or_none()
    if row is None:
        raise ModelNotFound(f"no model named {name!r} ({_known(session)}); create it with POST /models")
    return row


def model_by_id(session: Session, model_id: int, *, for_update: bool = False) -> Model:
    """The model with this id; ModelNotFound once it was deleted (a request that checked it by name
    must not carry on into another model created under the same name meanwhile)."""
    row = session.get(Model, model_id, with_for_update=for_update)
    if row is None:
        raise ModelNotFound(f"model {model_id} no longer exists: it was deleted")
    return row


def get_models(session: Session, names: Iterable[str]) -> list[Model]:
    """The models with these names; ModelNotFound naming the first that does not exist."""
    wanted = list(dict.fromkeys(names))
    found = {m.name: m for m in session.scalars(select(Model).where(Model.name.in_(wanted)))}
    for name in wanted:
        if name not in found:
            raise ModelNotFound(f"no model named {name!r} ({_known(session)})")
    return [found[n] for n in wanted]


def _known(session: Session) -> str:
    names = list(session.scalars(select(Model.name).order_by(Model.name).limit(11)))
    if not names:
        return "no model exists yet"
    return "models: " + ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")


@dataclass(frozen=True)
class ModelChanges:
    """A PATCH: only the fields in ``given`` change; None for a policy setting means the service's."""

    given: frozenset[str]
    description: str | None = None
    auto_promote: bool | None = None
    promote_max_old_miou_drop: float | None = None


def update_model(session: Session, row: Model, changes: ModelChanges) -> Model:
    if "description" in changes.given:
        row.description = _check_description(changes.description)
    if "auto_promote" in changes.given:
        row.auto_promote = changes.auto_promote
    if "promote_max_old_miou_drop" in changes.given:
        limit = changes.promote_max_old_miou_drop
        if limit is not None and not 0 <= limit <= 100:
            raise InvalidModel(f"promote_max_old_miou_drop must be between 0 and 100 IoU points, got {limit}")
        row.promote_max_old_miou_drop = limit
    session.flush()
    return row


def promotion_policy(settings: Settings, row: Model | None) -> PromotionPolicy:
    """The model's policy: its own settings where set, the service's elsewhere."""
    policy = PromotionPolicy.from_settings(settings)
    if row is None:
        return policy
    return policy.overridden(auto_promote=row.auto_promote, max_old_drop_points=row.promote_max_old_miou_drop)


# --- summary and deletion ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSummary:
    """A model at a glance: what it serves, what it knows, what it is doing."""

    model: Model
    policy: PromotionPolicy
    production: int | None
    latest: int | None
    versions: int
    classes: int  # excluding background
    pending_tasks: int
    last_task: Task | None


def summarize(session: Session, settings: Settings, row: Model) -> ModelSummary:
    aliases = dict(session.execute(select(Alias.name, Alias.version).where(
        Alias.model_id == row.id, Alias.name.in_((PRODUCTION, LATEST)))).all())
    classes = session.scalar(select(func.count()).select_from(SemanticClass).where(
        SemanticClass.model_id == row.id, SemanticClass.task_id.is_not(None)))
    last = session.scalars(select(Task).where(Task.model_id == row.id)
                           .order_by(Task.created_at.desc(), Task.id.desc()).limit(1)).first()
    return ModelSummary(row, promotion_policy(settings, row), aliases.get(PRODUCTION), aliases.get(LATEST),
                        version_count(session, row.id), classes, len(pending_task_ids(session, row.id)), last)


@dataclass(frozen=True)
class ModelObjects:
    """The object keys its rows named, of everything a model stored (for deletion; the rest is
    under ``models/{id}/``)."""

    keys: list[str]


def version_count(session: Session, model_id: int) -> int:
    return session.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.model_id == model_id))


def pending_task_ids(session: Session, model_id: int) -> list[str]:
    return list(session.scalars(select(Task.id).where(Task.model_id == model_id, Task.status.in_(PENDING_STATUSES))
                                .order_by(Task.created_at)))


def delete_model(session: Session, row: Model, confirm: str | None) -> ModelObjects:
    """Delete the model and every row it owns; returns the objects to delete once committed.

    Refused while a task of the model is queued or running, and, when it has versions, unless
    ``confirm`` repeats the model's name (deleting versions cannot be undone)."""
    pending = pending_task_ids(session, row.id)
    if pending:
        raise ModelConflict(f"model {row.name!r} has {len(pending)} queued or running task(s) ({', '.join(pending)}): "
                            "cancel them (POST /tasks/{id}/cancel) and wait for them to stop first")
    versions = version_count(session, row.id)
    if versions and confirm != row.name:
        raise ModelConflict(f"model {row.name!r} has {versions} version(s): deleting it deletes them, their "
                            f"checkpoints and its datasets for good; repeat its name to confirm (?confirm={row.name})")
    objects = ModelObjects(
        keys=[*session.scalars(select(ModelVersion.checkpoint_key).where(ModelVersion.model_id == row.id)),
              *_dataset_keys(session, row.id)],
    )
    mid = row.id
    # Tasks and versions point at each other: unlink them, then delete from the leaves up.
    session.execute(update(Task).where(Task.model_id == mid).values(parent_version=None, model_version=None))
    session.execute(update(ModelVersion).where(ModelVersion.model_id == mid).values(parent_version=None))
    session.execute(delete(Alias).where(Alias.model_id == mid))
    session.execute(delete(ClassMetric).where(ClassMetric.model_id == mid))
    delete_exports(session, mid)  # their objects are under models/{id}/, deleted with the rest
    session.execute(delete(ModelVersion).where(ModelVersion.model_id == mid))
    session.execute(delete(SemanticClass).where(SemanticClass.model_id == mid))
    task_ids = select(Task.id).where(Task.model_id == mid).scalar_subquery()
    session.execute(delete(DatasetItem).where(DatasetItem.task_id.in_(task_ids)))
    session.execute(delete(Task).where(Task.model_id == mid))
    session.delete(row)
    session.flush()
    return objects


def _dataset_keys(session: Session, model_id: int) -> Iterable[str]:
    rows = session.execute(select(DatasetItem.image_key, DatasetItem.mask_key).join(Task)
                           .where(Task.model_id == model_id))
    for image_key, mask_key in rows:
        yield image_key
        yield mask_key
