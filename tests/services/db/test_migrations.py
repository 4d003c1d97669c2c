"""The Alembic history against the models, on SQLite and Postgres."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

import services.db.models  # noqa: F401  (registers the tables)
from services.config import Settings
from services.db import migrate
from services.db.base import Base
from services.db.errors import DatabaseUnavailable, SchemaNotAtHead
from services.db.migrate import check_database
from services.db.session import make_engine

TABLES = {
    "aliases",
    "api_key_models",
    "api_keys",
    "audit_events",
    "staged_uploads",
    "version_exports",
    "webhook_deliveries",
    "webhooks",
    "class_metrics",
    "classes",
    "dataset_items",
    "model_versions",
    "models",
    "tasks",
    "worker_heartbeats",
}


def test_upgrade_from_empty_to_head(db_settings: Settings, engine: Engine) -> None:
    assert migrate.current(db_settings) is None
    migrate.upgrade(db_settings)
    assert migrate.current(db_settings) == migrate.head_revision()
    assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    assert TABLES == set(Base.metadata.tables)


def test_models_match_migrated_schema(db_settings: Settings, engine: Engine) -> None:
    migrate.upgrade(db_settings)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(context, Base.metadata) == []


def test_migrated_schema_has_named_constraints(db_settings: Settings, engine: Engine) -> None:
    migrate.upgrade(db_settings)
    insp = inspect(engine)
    assert {c["name"] for c in insp.get_check_constraints("tasks")} == {
        "ck_tasks_status_valid",
        "ck_tasks_attempts_nonnegative",
    }
    fks = {fk["name"]: fk["referred_table"] for fk in insp.get_foreign_keys("tasks")}
    assert fks == {
        "fk_tasks_model_id_models": "models",
        "fk_tasks_parent_version_model_versions": "model_versions",
        "fk_tasks_model_version_model_versions": "model_versions",
    }
    assert [u["name"] for u in insp.get_unique_constraints("model_versions")] == ["uq_model_versions_task_id"]


def test_downgrade_to_base_leaves_no_tables(db_settings: Settings, engine: Engine) -> None:
    migrate.upgrade(db_settings)
    migrate.downgrade(db_settings, "base")
    # alembic_version stays, empty: it records "no revision".
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    assert migrate.current(db_settings) is None
    migrate.upgrade(db_settings)  # and the history can be replayed
    assert migrate.current(db_settings) == migrate.head_revision()


def test_check_database_requires_head(db_settings: Settings, engine: Engine) -> None:
    with pytest.raises(SchemaNotAtHead, match="not at head.*strata db upgrade"):
        check_database(engine)
    migrate.upgrade(db_settings)
    assert check_database(engine) == migrate.head_revision()
    migrate.downgrade(db_settings, "base")
    with pytest.raises(SchemaNotAtHead, match="not at head"):
        check_database(engine)


def test_check_database_reports_unreachable_server() -> None:
    engine = make_engine("postgresql+psycopg://nobody:secret@127.0.0.1:1/strata")
    try:
        with pytest.raises(DatabaseUnavailable, match="STRATA_DATABASE_URL") as info:
            check_database(engine)
        assert "secret" not in str(info.value)
    finally:
        engine.dispose()


def test_upgrade_creates_missing_sqlite_dir(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'not' / 'yet' / 'strata.db'}"
    migrate.upgrade(url)
    assert (tmp_path / "not" / "yet" / "strata.db").is_file()
    assert migrate.current(url) == migrate.head_revision()

