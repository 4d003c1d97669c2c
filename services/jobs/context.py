"""What a worker's job runs with: settings, database sessions, the object store and its own name."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import sessionmaker

from services.config import Settings
from services.storage import ObjectStore


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    sessions: sessionmaker
    store: ObjectStore
    worker_name: str
