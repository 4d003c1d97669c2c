"""A model's aliases: list them, move one (``production``: promotion or rollback), remove one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.deps import AdminDep, AdminModelDep, ReadModelDep, SessionDep, StateDep
from api.schemas.versions import AliasMove, AliasMoved, AliasPublic
from services import audit
from services.registry.aliases import ALIAS_PATTERN, PRODUCTION, list_aliases, move_alias, remove_alias

router = APIRouter(prefix="/models/{name}/aliases", tags=["aliases"])
AliasName = Annotated[str, Path(max_length=64, pattern=f"^{ALIAS_PATTERN}$", description=(
    "production (what segmentation serves by default), latest (the newest version; moved by the service) "
    "or a name of your own such as candidate."))]


@router.get("", response_model=list[AliasPublic], responses={404: {"description": "no such model"}})
def get_aliases(model: ReadModelDep, session: SessionDep) -> list[dict]:
    return [{"name": a.name, "version": a.version, "updated_at": a.updated_at} for a in list_aliases(session, model.id)]


@router.put("/{alias}", response_model=AliasMoved, responses={
    404: {"description": "no such model or version"}, 409: {"description": "latest is moved by the service only"}})
def put_alias(model: AdminModelDep, alias: AliasName, body: AliasMove, session: SessionDep, state: StateDep,
              caller: AdminDep) -> dict:
    """Point an alias at a version. Moving ``production`` promotes it (to an older version: a
    rollback); the API swaps the served model once the version is loaded, without downtime."""
    previous = move_alias(session, model.id, alias, body.version)
    audit.alias_moved(session, caller, model, alias, previous, body.version)
    session.commit()
    if alias == PRODUCTION:
        state.inference.refresh()  # load and swap in the new production model now, not at the next poll
    return {"alias": alias, "version": body.version, "previous": previous}


@router.delete("/{alias}", status_code=status.HTTP_204_NO_CONTENT, responses={
    404: {"description": "no such model or alias"}, 409: {"description": "production and latest cannot be removed"}})
def delete_alias(model: AdminModelDep, alias: AliasName, session: SessionDep, caller: AdminDep) -> Response:
    version = remove_alias(session, model.id, alias)
    audit.record(session, caller, audit.Action.ALIAS_DELETE, model=model, target=f"alias {alias}",
                 detail={"version": version})
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
