"""Staged uploads: the dataset objects a registration stores before its rows exist.

A registration writes its objects first and its rows last (one transaction). A row here, written
before the first object, says "these objects may be left behind": it is deleted with the task's own
rows when the registration commits, or after its objects were deleted when it failed. If the
object store (or the process) died before that cleanup could run, the row stays and the janitor
deletes the objects once the store is back (services/jobs/staging.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 08:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staged_uploads",
        sa.Column("prefix", sa.String(length=512), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_staged_uploads")),
    )


def downgrade() -> None:
    op.drop_table("staged_uploads")
