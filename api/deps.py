"""Request dependencies, as ``Annotated`` aliases the routers use."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.state import AppState
from services.auth import ADMIN, INFER, READ_SCOPES, Caller, authenticate, hash_key
from services.config import Settings
from services.db.models import Model
from services.db.session import session_scope
from services.registry.models import MODEL_NAME_PATTERN, ModelNotFound, get_model


def get_state(request: Request) -> AppState:
    return request.app.state.strata


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]


# --- auth ------------------------------------------------------------------------------------
# HTTPBearer (without auto_error) only puts the scheme into the OpenAPI document, so /docs has an
# "Authorize" button; the header is checked below to give precise messages.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer strata_...`")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def _forbidden(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail)


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing Authorization header: send 'Authorization: Bearer <API key>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("malformed Authorization header: expected 'Bearer <API key>'")
    return token.strip()


@cache  # one function per scope set: FastAPI then checks the key once per request, however many deps ask
def require_scopes(*any_of: str, every_model: bool = False):
    """A dependency admitting a valid, unrevoked key that has at least one of ``any_of`` (and, with
    ``every_model``, is not limited to some models)."""
    needed = " or ".join(repr(s) for s in any_of)

    def dependency(request: Request, state: StateDep,
                   _doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
        token = _bearer_token(request)
        caller = state.callers.fetch(hash_key(token), lambda: _verify(state, token))
        if caller is None:
            raise _unauthorized("invalid or revoked API key")
        if not caller.has_any(any_of):
            raise _forbidden(f"this needs a key with scope {needed}; {caller.label} has {list(caller.scopes)}")
        if every_model and caller.model_ids is not None:
            raise _forbidden(f"this needs a key for every model; {caller.label} is limited to some models")
        return caller

    return dependency


def _verify(state: AppState, token: str) -> Caller | None:
    # A session of its own, committed at once: last_used_at is written at most once a minute.
    with session_scope(state.sessions) as session:
        key = authenticate(session, token)
        return Caller.of(key) if key is not None else None


def check_model_access(caller: Caller, model: Model) -> None:
    """403 unless the key may use this model."""
    if not caller.may_use(model.id):
        raise _forbidden(f"{caller.label} is not allowed to use model {model.name!r}")


AdminDep = Annotated[Caller, Depends(require_scopes(ADMIN))]
GlobalAdminDep = Annotated[Caller, Depends(require_scopes(ADMIN, every_model=True))]
ReaderDep = Annotated[Caller, Depends(require_scopes(*READ_SCOPES))]

ModelName = Annotated[str, Path(description="The model's name.", max_length=64, pattern=f"^{MODEL_NAME_PATTERN}$")]


def model_for(*any_of: str):
    """A dependency resolving ``{name}`` to the model, for a key with one of ``any_of`` that may use it.

    It reads in a short session of its own and returns the row detached, so a route that does not
    need the database (segmentation) holds no transaction while it works."""

    scoped = Depends(require_scopes(*any_of))

    def dependency(name: ModelName, state: StateDep, caller: Caller = scoped) -> Model:
        try:
            model = state.models.fetch(name, lambda: _read_model(state, name))
        except ModelNotFound:
            if caller.model_ids is None:
                raise
            # The usual message lists the models that exist: not for a key limited to some.
            raise ModelNotFound(f"no model named {name!r} among those {caller.label} may use") from None
        check_model_access(caller, model)
        return model

    return dependency


def _read_model(state: AppState, name: str) -> Model:
    with state.sessions() as session:
        return get_model(session, name)


ReadModelDep = Annotated[Model, Depends(model_for(*READ_SCOPES))]
AdminModelDep = Annotated[Model, Depends(model_for(ADMIN))]
InferModelDep = Annotated[Model, Depends(model_for(INFER))]
