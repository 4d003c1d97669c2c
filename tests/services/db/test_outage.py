"""Which driver errors mean "the database cannot be reached now" (503, stand-ins) and which are a
fault of ours reported with the same exception types (500)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from services.db.errors import is_outage
from tests.conftest import free_port


def error_of(url: str, sql: str = "SELECT 1") -> OperationalError:
    engine = create_engine(url)
    try:
        with pytest.raises(OperationalError) as caught, engine.connect() as conn:
            conn.execute(text(sql))
        return caught.value
    finally:
        engine.dispose()


def test_a_server_that_refuses_connections_is_an_outage():
    assert is_outage(error_of(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"))


def test_a_missing_table_is_not_an_outage(tmp_path):
    assert not is_outage(error_of(f"sqlite:///{tmp_path / 'db.sqlite'}", "SELECT * FROM no_such_table"))


def test_a_file_that_cannot_be_opened_is_an_outage(tmp_path):
    assert is_outage(error_of(f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite'}"))
