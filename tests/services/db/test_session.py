"""Engines and sessions: the SQLite settings that let the API and the worker share one file."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from services.config import Settings
from services.db import migrate
from services.db.errors import DatabaseError
from services.db.models import WorkerHeartbeat
from services.db.session import make_engine, make_session_factory, session_scope


def test_sqlite_connections_are_configured(embedded_settings: Settings) -> None:
    engine = make_engine(embedded_settings)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()


def test_sqlite_concurrent_read_then_write(embedded_settings: Settings) -> None:
    """Separate connections that read, then write, all succeed: no "database is locked".

    With SQLite's default deferred BEGIN, a transaction that has read cannot write once another
    connection has committed, and fails at once instead of waiting; BEGIN IMMEDIATE prevents it.
    """
    migrate.upgrade(embedded_settings)
    writers, rounds = 4, 25
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(n: int) -> None:
        engine = make_engine(embedded_settings)  # its own pool: like another process
        factory = make_session_factory(engine)
        try:
            start.wait()
            for i in range(rounds):
                with session_scope(factory) as s:
                    seen = s.scalar(select(func.count()).select_from(WorkerHeartbeat))
                    s.add(WorkerHeartbeat(hostname=f"host{n}-{i}", pid=seen, queue="training"))
        except BaseException as err:  # reported below, from the test's thread
            errors.append(err)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = make_engine(embedded_settings)
    with make_session_factory(engine)() as s:
        pids = s.scalars(select(WorkerHeartbeat.pid)).all()
    engine.dispose()
    # Serialised transactions: each saw every earlier commit, so the counts are 0..N-1 exactly.
    assert sorted(pids) == list(range(writers * rounds))


def test_malformed_url_names_the_variable() -> None:
    with pytest.raises(DatabaseError, match="STRATA_DATABASE_URL"):
        make_engine("not a url")
