"""Engines and sessions (the readiness check of the schema is in ``migrate``).

The API and the worker are separate processes writing the same database. On SQLite every
connection therefore turns on foreign keys, WAL (readers never block the writer) and a 30 s busy
timeout, and every transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front,
waiting up to the busy timeout, instead of failing with "database is locked" when a transaction
that has already read tries to write after another process committed. The price: on SQLite a
transaction excludes other transactions for as long as it is open, so keep sessions short (never
hold one across object-store uploads or training). Postgres engines ping pooled connections
before use, so a restarted server does not fail the first request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db.errors import (
    DATABASE_URL_VAR,
    DatabaseError,
    DatabaseUnavailable,
    display_url,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url(settings_or_url: Settings | str) -> str:
    """The database URL of a Settings object (its embedded default included), or the URL itself."""
    if isinstance(settings_or_url, Settings):
        return settings_or_url.effective_database_url
    return settings_or_url


def parse_url(url: str) -> URL:
    """Parse a database URL; a malformed one raises DatabaseError naming STRATA_DATABASE_URL."""
    try:
        return make_url(url)
    except ArgumentError as err:
        raise DatabaseError(f"{DATABASE_URL_VAR}: cannot parse database URL {display_url(url)!r}: {err}") from None


def make_engine(settings_or_url: Settings | str, **engine_kwargs: Any) -> Engine:
    """An Engine for the configured database; ``engine_kwargs`` go to ``create_engine``."""
    url = database_url(settings_or_url)
    if parse_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, **engine_kwargs)
    engine_kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **engine_kwargs)


def _sqlite_engine(url: str, **engine_kwargs: Any) -> Engine:
    # Connections come from a pool and FastAPI runs sync code in a thread pool, so a connection
    # may be used by a thread other than the one that opened it (never by two at once).
    connect_args = {"check_same_thread": False, **engine_kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **engine_kwargs)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Stop the driver from issuing its own (deferred) BEGINs; _sqlite_begin_immediate does it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit (no expiry)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed if the block succeeds, rolled back if it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def unavailable(engine_or_url: Engine | str, err: OperationalError) -> DatabaseUnavailable:
    """A DatabaseUnavailable saying which database could not be used and why."""
    url = engine_or_url if isinstance(engine_or_url, str) else engine_or_url.url.render_as_string()
    reason = str(err.orig).strip() if err.orig is not None else str(err)
    return DatabaseUnavailable(
        f"cannot use the database at {display_url(url)} (check {DATABASE_URL_VAR}): {reason}"
    )
