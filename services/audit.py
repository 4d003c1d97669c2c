"""The audit log: who promoted, rolled back, cancelled, created, changed, revoked or deleted what, and when.

``record`` adds the event to the caller's transaction, so it is committed with the action it
describes or not at all: a refused action (a 404, a 409) leaves no event, and no action is done
without one. The actor is the API key that acted (``auth.Caller``; its id, name and prefix are
copied, so the event stays readable whatever becomes of the key) or None for the service itself
(an automatic promotion after training). Events are never changed or deleted.

Moving ``production`` to a newer version than the current one is a promotion, to an older one a
rollback; moving any other alias is ``alias.set``. ``latest`` is the service's bookkeeping (it
follows every new version) and is not logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.auth import Caller
from services.db.base import utcnow
from services.db.models import AuditEvent, Model
from services.registry.aliases import PRODUCTION


class Action(StrEnum):
    MODEL_CREATE = "model.create"
    MODEL_UPDATE = "model.update"
    MODEL_DELETE = "model.delete"
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    TASK_CREATE = "task.create"
    TASK_CANCEL = "task.cancel"
    ALIAS_SET = "alias.set"
    ALIAS_DELETE = "alias.delete"
    VERSION_PROMOTE = "version.promote"
    VERSION_ROLLBACK = "version.rollback"
    VERSION_DELETE = "version.delete"
    WEBHOOK_CREATE = "webhook.create"
    WEBHOOK_UPDATE = "webhook.update"
    WEBHOOK_DELETE = "webhook.delete"
    WEBHOOK_DISABLE = "webhook.disable"  # by the service, after failed deliveries in a row


def record(session: Session, actor: Caller | None, action: Action, *, model: Model | None = None,
           target: str | None = None, detail: Mapping[str, Any] | None = None) -> AuditEvent:
    """Add one event to the session's transaction; the caller commits it with the action."""
    event = AuditEvent(
        at=utcnow(), action=Action(action).value, target=target, detail=dict(detail or {}),
        key_id=actor.key_id if actor else None, key_name=actor.name if actor else None,
        key_prefix=actor.prefix if actor else None,
        model_id=model.id if model else None, model_name=model.name if model else None,
    )
    session.add(event)
    return event


def production_move(previous: int | None, version: int) -> Action:
    """A move of ``production``: a rollback when it goes back to an older version, else a promotion."""
    return Action.VERSION_ROLLBACK if previous is not None and version < previous else Action.VERSION_PROMOTE


def alias_moved(session: Session, actor: Caller | None, model: Model, alias: str, previous: int | None,
                version: int, **detail: Any) -> AuditEvent:
    """Record that ``alias`` moved from ``previous`` (None: it was not set) to ``version``; ``detail``
    adds to ``{"from": previous, "to": version}`` (an automatic promotion says so there)."""
    if alias == PRODUCTION:
        action, target = production_move(previous, version), f"version {version}"
    else:
        action, target = Action.ALIAS_SET, f"alias {alias}"
    return record(session, actor, action, model=model, target=target,
                  detail={"from": previous, "to": version, **detail})


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"from": old, "to": new}}`` for the fields whose value changed."""
    return {k: {"from": before.get(k), "to": v} for k, v in after.items() if before.get(k) != v}


def list_events(session: Session, *, action: Action | None = None, model: str | None = None,
                key_id: int | None = None, before_id: int | None = None, limit: int = 100) -> list[AuditEvent]:
    """Events newest first, at most ``limit``, with ids below ``before_id`` (the last id of the
    previous page). ``model`` is a name, matched as it was when the event happened: a deleted
    model's history stays readable under it (shared with a model created again under that name)."""
    stmt = select(AuditEvent)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == Action(action).value)
    if model is not None:
        stmt = stmt.where(AuditEvent.model_name == model)
    if key_id is not None:
        stmt = stmt.where(AuditEvent.key_id == key_id)
    if before_id is not None:
        stmt = stmt.where(AuditEvent.id < before_id)
    # By id, not by ``at``: ids are unique and only grow, so consecutive pages never overlap.
    return list(session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(limit)))
