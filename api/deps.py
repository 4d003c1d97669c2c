"""Request dependencies, as ``Annotated`` aliases the routers use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.state import AppState
from services.auth import authenticate, scopes_of
from services.config import Settings
from services.db.models import ApiKey
from services.db.session import session_scope


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


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing Authorization header: send 'Authorization: Bearer <API key>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("malformed Authorization header: expected 'Bearer <API key>'")
    return token.strip()


def require_scopes(*any_of: str):
    """A dependency admitting a valid, unrevoked key that has at least one of ``any_of``."""
    needed = " or ".join(repr(s) for s in any_of)

    def dependency(request: Request, state: StateDep,
                   _doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:
        token = _bearer_token(request)
        # A session of its own, committed at once: last_used_at is written at most once a minute.
        with session_scope(state.sessions) as session:
            key = authenticate(session, token)
        if key is None:
            raise _unauthorized("invalid or revoked API key")
        if not set(scopes_of(key)) & set(any_of):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs a key with scope {needed}; key {key.prefix}... ({key.name!r}) has {scopes_of(key)}",
            )
        return key

    return dependency


AdminDep = Annotated[ApiKey, Depends(require_scopes("admin"))]
InferDep = Annotated[ApiKey, Depends(require_scopes("infer"))]
ReaderDep = Annotated[ApiKey, Depends(require_scopes("admin", "infer"))]
