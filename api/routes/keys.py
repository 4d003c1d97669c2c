"""API keys: create (plaintext shown once), list (never hashes), revoke. Admin keys for every model only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from api.deps import GlobalAdminDep, SessionDep, StateDep
from api.params import DbInt
from api.schemas.keys import KeyCreate, KeyCreated, KeyPublic
from services import audit
from services.auth import create_key, list_keys, models_of, revoke_key, scopes_of
from services.db.models import ApiKey
from services.registry.models import get_models

router = APIRouter(prefix="/keys", tags=["keys"])


def _public(key: ApiKey) -> dict:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "scopes": scopes_of(key), "models": models_of(key),
            "created_at": key.created_at, "last_used_at": key.last_used_at, "revoked_at": key.revoked_at}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated,
             responses={404: {"description": "`models` names a model that does not exist"}})
def post_key(body: KeyCreate, session: SessionDep, caller: GlobalAdminDep) -> dict:
    """Create a key, for every model or limited to ``models``. The response holds the key itself,
    the only time it is ever shown."""
    models = None if body.models is None else get_models(session, body.models)
    key, plaintext = create_key(session, body.name, body.scopes, models)
    audit.record(session, caller, audit.Action.KEY_CREATE, target=f"key {key.id}", detail={
        "name": key.name, "prefix": key.prefix, "scopes": scopes_of(key), "models": models_of(key)})
    session.commit()
    return {**_public(key), "key": plaintext}


@router.get("", response_model=list[KeyPublic])
def get_keys(session: SessionDep, _: GlobalAdminDep) -> list[dict]:
    return [_public(k) for k in list_keys(session)]


@router.delete("/{key_id}", response_model=KeyPublic,
               responses={404: {"description": "no such key"}, 409: {"description": "the last admin key"}})
def delete_key(key_id: Annotated[DbInt, Path(description="The key's id (GET /keys).")], session: SessionDep,
               caller: GlobalAdminDep, state: StateDep) -> dict:
    """Revoke a key (it stays listed, with ``revoked_at``). The last active admin key cannot go."""
    was_active = (row := session.get(ApiKey, key_id)) is not None and row.revoked_at is None
    key = revoke_key(session, key_id)
    if was_active:  # revoking a revoked key again changes nothing, and logs nothing
        audit.record(session, caller, audit.Action.KEY_REVOKE, target=f"key {key.id}",
                     detail={"name": key.name, "prefix": key.prefix})
    session.commit()
    state.callers.forget(key.key_hash)  # no longer answered from this process's key cache either
    return _public(key)
