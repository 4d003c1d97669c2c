"""Alembic environment: which database, which metadata, how to run.

The database comes from, in order: a connection our code placed in ``config.attributes``
("connection", used by ``services.db.migrate`` so the migration runs under its lock), a URL
placed there ("database_url"), or the one settings object (``get_settings()``, i.e. the
``STRATA_*`` environment). SQLite cannot ALTER most things, so there migrations run in batch
mode (copy the table, swap it in).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

import services.db.models  # noqa: F401  (registers every table on Base.metadata)
from services.db.base import Base
from services.db.session import make_engine, parse_url

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return url
    from services.config import get_settings

    return get_settings().effective_database_url


def _options(dialect_name: str) -> dict:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
    }


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``--sql``) instead of running it."""
    url = _database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(parse_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_database_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
