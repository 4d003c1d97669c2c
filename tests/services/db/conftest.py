"""Database fixtures: one settings object per backend, each starting from an empty database.

SQLite lives in the test's own data dir, so it starts empty. The Postgres database is shared
by the whole test session, so its ``public`` schema is dropped and recreated before each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from services.config import Settings, load_settings
from services.db.session import make_engine
from tests.servers import empty_postgres


@pytest.fixture
def pg_settings(data_dir: Path, postgres_url: str) -> Settings:
    empty_postgres(postgres_url)
    return load_settings(data_dir=data_dir, database_url=postgres_url)


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request: pytest.FixtureRequest) -> Settings:
    """An empty database, once on SQLite (embedded defaults) and once on Postgres."""
    if request.param == "sqlite":
        return request.getfixturevalue("embedded_settings")
    return request.getfixturevalue("pg_settings")


@pytest.fixture
def engine(db_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(db_settings)
    yield engine
    engine.dispose()
