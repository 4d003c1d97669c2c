"""What the API process holds open: one engine, one store, one Celery client."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from services.config import Settings
from services.db.session import make_engine, make_session_factory
from services.storage import ObjectStore, open_store
from worker.app import create_celery


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker
    store: ObjectStore
    celery: Celery

    @classmethod
    def open(cls, settings: Settings) -> "AppState":
        engine = make_engine(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            store=open_store(settings),
            celery=create_celery(settings),
        )

    def close(self) -> None:
        self.engine.dispose()
