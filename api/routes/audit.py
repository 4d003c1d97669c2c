"""The audit log: who did what to what, and when, newest first. Admin keys for every model only: it
names every model and every key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import GlobalAdminDep, SessionDep
from api.params import DbInt
from api.schemas.audit import AuditEventPublic
from services.audit import Action, list_events
from services.db.models import AuditEvent
from services.registry.models import MODEL_NAME_PATTERN

router = APIRouter(prefix="/audit", tags=["audit"])


def _public(event: AuditEvent) -> dict:
    return {"id": event.id, "at": event.at, "action": event.action, "key_id": event.key_id,
            "key_name": event.key_name, "key_prefix": event.key_prefix, "model": event.model_name,
            "target": event.target, "detail": event.detail}


@router.get("", response_model=list[AuditEventPublic], responses={403: {"description": "needs an admin key for "
                                                                                         "every model"}})
def get_audit(
    session: SessionDep, _: GlobalAdminDep,
    action: Annotated[Action | None, Query(description="Only this action.")] = None,
    model: Annotated[str | None, Query(max_length=64, pattern=f"^{MODEL_NAME_PATTERN}$", description=(
        "Only events of the model with this name (a deleted model's too)."))] = None,
    key_id: Annotated[DbInt | None, Query(description="Only what this key did.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[DbInt | None, Query(description=(
        "Only events older than this one: the `id` of the last event of the previous page."))] = None,
) -> list[dict]:
    """Admin actions, newest first: models created, changed or deleted, tasks created or cancelled,
    aliases moved or removed (a move of `production` is a promotion, or a rollback to an older
    version), versions deleted, keys created or revoked."""
    rows = list_events(session, action=action, model=model, key_id=key_id, before_id=before_id, limit=limit)
    return [_public(e) for e in rows]
