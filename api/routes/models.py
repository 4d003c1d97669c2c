"""Models: create, list, show, change (description, promotion policy) and delete named lineages."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from starlette.concurrency import run_in_threadpool

from api.deps import AdminDep, AdminModelDep, GlobalAdminDep, ReaderDep, ReadModelDep, SessionDep, StateDep
from api.schemas.models import ModelCreate, ModelPublic, ModelUpdate
from api.state import AppState
from services import audit
from services.auth import Caller
from services.config import Settings
from services.db.models import Model
from services.db.session import session_scope
from services.registry.models import (
    MODEL_NAME_PATTERN,
    ModelChanges,
    ModelObjects,
    create_model,
    delete_model,
    list_models,
    model_by_id,
    summarize,
    update_model,
)
from services.storage import ObjectStore
from services.storage.keys import model_prefix

log = logging.getLogger(__name__)
router = APIRouter(prefix="/models", tags=["models"])
NOT_FOUND = {404: {"description": "no such model"}}


def _public(session, settings: Settings, row: Model) -> dict:
    s = summarize(session, settings, row)
    last = s.last_task
    return {
        "name": row.name, "description": row.description, "architecture": row.architecture,
        "created_at": row.created_at, "updated_at": row.updated_at,
        "auto_promote": row.auto_promote, "promote_max_old_miou_drop": row.promote_max_old_miou_drop,
        "policy": {"auto_promote": s.policy.auto_promote, "max_old_miou_drop": s.policy.max_old_drop_points},
        "production": s.production, "latest": s.latest, "versions": s.versions, "classes": s.classes,
        "pending_tasks": s.pending_tasks,
        "last_task": None if last is None else {"id": last.id, "status": last.status, "created_at": last.created_at,
                                                "finished_at": last.finished_at, "error": last.error},
    }


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelPublic,
             responses={409: {"description": "the name is taken"}, 403: {"description": "needs an admin key "
                                                                                       "for every model"}})
def post_model(body: ModelCreate, response: Response, session: SessionDep, state: StateDep,
               caller: GlobalAdminDep) -> dict:
    """Create an empty model; its first task chooses its architecture."""
    row = create_model(session, body.name, body.description)
    audit.record(session, caller, audit.Action.MODEL_CREATE, model=row, target=f"model {row.name}",
                 detail={"description": row.description})
    session.commit()
    state.inference.refresh()  # so /readyz lists it at once
    response.headers["Location"] = f"/models/{row.name}"
    return _public(session, state.settings, row)


@router.get("", response_model=list[ModelPublic])
def get_models(session: SessionDep, state: StateDep, caller: ReaderDep) -> list[dict]:
    """Every model this key may use, by name."""
    return [_public(session, state.settings, m) for m in list_models(session, caller.model_ids)]


@router.get("/{name}", response_model=ModelPublic, responses=NOT_FOUND)
def get_model(model: ReadModelDep, session: SessionDep, state: StateDep) -> dict:
    return _public(session, state.settings, session.get(Model, model.id))


@router.patch("/{name}", response_model=ModelPublic, responses=NOT_FOUND)
def patch_model(model: AdminModelDep, body: ModelUpdate, session: SessionDep, state: StateDep,
                caller: AdminDep) -> dict:
    """Change the description or the model's promotion policy (null: back to the service's setting)."""
    row = session.get(Model, model.id)
    before = {field: getattr(row, field) for field in body.model_fields_set}
    update_model(session, row, ModelChanges(given=frozenset(body.model_fields_set), **body.model_dump()))
    after = {field: getattr(row, field) for field in body.model_fields_set}
    audit.record(session, caller, audit.Action.MODEL_UPDATE, model=row, target=f"model {row.name}",
                 detail=audit.changes(before, after))
    session.commit()
    return _public(session, state.settings, row)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses={
    **NOT_FOUND, 409: {"description": "tasks are pending, or it has versions and `confirm` does not repeat its name"}})
async def remove_model(
    model: AdminModelDep, state: StateDep, caller: AdminDep,
    confirm: Annotated[str | None, Query(max_length=64, pattern=f"^{MODEL_NAME_PATTERN}$", description=(
        "Required when the model has versions: its name again. Its versions, checkpoints and datasets go too."))] = None,
) -> Response:
    """Delete the model, its versions, tasks, classes and stored objects."""
    objects = await run_in_threadpool(_delete, state, model.id, confirm, caller)
    state.inference.refresh()  # its loaded versions are dropped at the next look at the registry
    await run_in_threadpool(_delete_objects, state.store, model.id, objects)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _delete(state: AppState, model_id: int, confirm: str | None, caller: Caller) -> ModelObjects:
    with session_scope(state.sessions) as session:
        # The row lock: a registration into this model waits for the deletion, then finds it gone.
        row = model_by_id(session, model_id, for_update=True)
        # Added first (the row is gone after), committed with the deletion or rolled back with it.
        audit.record(session, caller, audit.Action.MODEL_DELETE, model=row, target=f"model {row.name}")
        return delete_model(session, row, confirm)


def _delete_objects(store: ObjectStore, model_id: int, objects: ModelObjects) -> None:
    """After the commit: rows never point at a deleted object; a failure here only leaves garbage."""
    try:
        for key in objects.keys:  # keys from before models existed live outside models/{id}/
            store.delete(key)
        store.delete_prefix(model_prefix(model_id))
    except Exception:
        log.exception("model %s is deleted but some of its objects could not be removed", model_id)
