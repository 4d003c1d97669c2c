"""Request dependencies, as ``Annotated`` aliases the routers use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.state import AppState
from services.config import Settings
from services.storage import ObjectStore


def get_state(request: Request) -> AppState:
    return request.app.state.strata


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


def get_store(state: StateDep) -> ObjectStore:
    return state.store


def get_celery(state: StateDep) -> Celery:
    return state.celery


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
