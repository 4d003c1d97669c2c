"""Several models in one service: a ``models`` table, and ``model_id`` in every key of what a model
owns (classes, tasks, versions, their metrics, aliases); API keys limited to some models.

An existing single-model deployment's rows all move into one model named ``default`` (created only
when there is something to move). Class indices, version numbers and alias names become unique
within their model: the primary keys of ``classes``, ``model_versions``, ``class_metrics`` and
``aliases`` gain ``model_id`` in front, and every foreign key between them includes it. Task specs
rename their ``model`` field (the architecture) to ``architecture``: "model" now names the lineage.

Objects keep their keys: rows store the key of every object they point at, so checkpoints and
datasets written before this revision stay where they are and stay readable.

Downgrade is possible while at most one model exists; keys limited to models are revoked on the way
down (the old schema cannot limit them, and widening them silently would be worse).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 04:00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
DEFAULT_MODEL = "default"
DEFAULT_MODEL_ID = 1
OWNED = ("classes", "tasks", "model_versions", "class_metrics", "aliases")
# (table, constraint name, local columns after the change, referred table, referred columns, ondelete)
COMPOSITE_FKS = (
    ("tasks", "fk_tasks_parent_version_model_versions", ["model_id", "parent_version"], "model_versions",
     ["model_id", "version"], None),
    ("tasks", "fk_tasks_model_version_model_versions", ["model_id", "model_version"], "model_versions",
     ["model_id", "version"], None),
    ("model_versions", "fk_model_versions_parent_version_model_versions", ["model_id", "parent_version"],
     "model_versions", ["model_id", "version"], None),
    ("class_metrics", "fk_class_metrics_version_model_versions", ["model_id", "version"], "model_versions",
     ["model_id", "version"], "CASCADE"),
    ("class_metrics", "fk_class_metrics_class_index_classes", ["model_id", "class_index"], "classes",
     ["model_id", "id"], None),
    ("aliases", "fk_aliases_version_model_versions", ["model_id", "version"], "model_versions",
     ["model_id", "version"], None),
)
PRIMARY_KEYS = {
    "classes": ["id"],
    "model_versions": ["version"],
    "class_metrics": ["version", "class_index"],
    "aliases": ["name"],
}


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=True),
        sa.Column("auto_promote", sa.Boolean(), nullable=True),
        sa.Column("promote_max_old_miou_drop", sa.Double(), nullable=True),
        sa.Column("last_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
        sqlite_autoincrement=True,  # object keys hold the id: it must never be reused
    )
    bind = op.get_bind()
    if _has_data(bind):
        _create_default_model(bind)
    _drop_old_foreign_keys()
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("model_id", sa.Integer(), nullable=True))
        op.execute(f"UPDATE {table} SET model_id = {DEFAULT_MODEL_ID}")
        with op.batch_alter_table(table) as batch:
            batch.alter_column("model_id", existing_type=sa.Integer(), nullable=False)
            if table in PRIMARY_KEYS:
                batch.drop_constraint(f"pk_{table}", type_="primary")
                batch.create_primary_key(f"pk_{table}", ["model_id", *PRIMARY_KEYS[table]])
            if table == "classes":
                batch.drop_constraint("uq_classes_name", type_="unique")
                batch.create_unique_constraint("uq_classes_model_id_name", ["model_id", "name"])
            if table != "class_metrics":  # its model_id is covered by its composite keys
                batch.create_foreign_key(f"fk_{table}_model_id_models", "models", ["model_id"], ["id"])
    for table, name, local, referred, remote, ondelete in COMPOSITE_FKS:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(name, referred, local, remote, ondelete=ondelete)
    op.create_index("ix_tasks_model_id_created_at", "tasks", ["model_id", "created_at"])
    with op.batch_alter_table("tasks") as batch:  # an Idempotency-Key is one client's, within one model
        batch.drop_constraint("uq_tasks_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_tasks_model_id_idempotency_key", ["model_id", "idempotency_key"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("all_models", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.create_table(
        "api_key_models",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_api_key_models_key_id_api_keys"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_api_key_models_model_id_models"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id", "model_id", name=op.f("pk_api_key_models")),
    )
    _rename_spec_field(bind, "model", "architecture")
    _check_foreign_keys(bind)


def downgrade() -> None:
    bind = op.get_bind()
    models = bind.execute(sa.text("SELECT name FROM models ORDER BY id")).scalars().all()
    if len(models) > 1:
        raise RuntimeError(f"cannot downgrade below 0003 while {len(models)} models exist ({', '.join(models)}): "
                           "the older schema holds one model only; delete all but one first")
    _rename_spec_field(bind, "architecture", "model")
    op.execute("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE all_models = false AND revoked_at IS NULL")
    op.drop_table("api_key_models")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("all_models")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint("uq_tasks_model_id_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_tasks_idempotency_key", ["idempotency_key"])
    op.drop_index("ix_tasks_model_id_created_at", table_name="tasks")
    for table, name, *_ in COMPOSITE_FKS:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="foreignkey")
    for table in reversed(OWNED):
        with op.batch_alter_table(table) as batch:
            if table != "class_metrics":
                batch.drop_constraint(f"fk_{table}_model_id_models", type_="foreignkey")
            if table == "classes":
                batch.drop_constraint("uq_classes_model_id_name", type_="unique")
                batch.create_unique_constraint("uq_classes_name", ["name"])
            if table in PRIMARY_KEYS:
                batch.drop_constraint(f"pk_{table}", type_="primary")
                batch.create_primary_key(f"pk_{table}", PRIMARY_KEYS[table])
            batch.drop_column("model_id")
    _create_old_foreign_keys()
    op.drop_table("models")
    _check_foreign_keys(bind)


# --- helpers ------------------------------------------------------------------------------------
def _has_data(bind: sa.Connection) -> bool:
    return any(bind.execute(sa.text(f"SELECT 1 FROM {t} LIMIT 1")).first() for t in OWNED)


def _create_default_model(bind: sa.Connection) -> None:
    architecture = bind.execute(sa.text(
        "SELECT architecture FROM model_versions ORDER BY version DESC LIMIT 1")).scalar()
    if architecture is None:  # no version yet: the first task chose it
        for (spec,) in bind.execute(sa.text("SELECT spec FROM tasks ORDER BY created_at LIMIT 1")):
            architecture = _as_dict(spec).get("model")
    tasks = sa.table("tasks", sa.column("created_at", TIMESTAMP))
    created = bind.execute(sa.select(tasks.c.created_at).order_by(tasks.c.created_at).limit(1)).scalar()
    now = datetime.now(timezone.utc)
    models = sa.table("models", sa.column("id"), sa.column("name"), sa.column("description"),
                      sa.column("architecture"), sa.column("last_version"), sa.column("created_at", TIMESTAMP),
                      sa.column("updated_at", TIMESTAMP))
    last = bind.execute(sa.text("SELECT MAX(version) FROM model_versions")).scalar() or 0
    bind.execute(models.insert().values(
        id=DEFAULT_MODEL_ID, name=DEFAULT_MODEL, architecture=architecture, last_version=last,
        description="The model of this deployment before it held several (migration 0003).",
        created_at=created or now, updated_at=now))
    if bind.dialect.name == "postgresql":  # the explicit id must not collide with the sequence later
        bind.execute(sa.text("SELECT setval(pg_get_serial_sequence('models', 'id'), 1)"))


def _drop_old_foreign_keys() -> None:
    for table, name, *_ in COMPOSITE_FKS:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="foreignkey")


def _create_old_foreign_keys() -> None:
    for table, name, local, referred, remote, ondelete in COMPOSITE_FKS:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(name, referred, local[1:], remote[1:], ondelete=ondelete)


def _check_foreign_keys(bind: sa.Connection) -> None:
    """SQLite rebuilt the tables with foreign keys off (services/db/migrate.py): check every row
    still satisfies them before this transaction commits."""
    if bind.dialect.name == "sqlite":
        broken = bind.execute(sa.text("PRAGMA foreign_key_check")).all()
        if broken:
            raise RuntimeError(f"migration 0003 left rows that break foreign keys: {broken[:5]}")


def _as_dict(value: object) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def _rename_spec_field(bind: sa.Connection, old: str, new: str) -> None:
    tasks = sa.table("tasks", sa.column("id"), sa.column("spec", sa.JSON()))
    for task_id, spec in bind.execute(sa.select(tasks.c.id, tasks.c.spec)).all():
        spec = _as_dict(spec)
        if old in spec:
            spec[new] = spec.pop(old)
            bind.execute(tasks.update().where(tasks.c.id == task_id).values(spec=spec))
