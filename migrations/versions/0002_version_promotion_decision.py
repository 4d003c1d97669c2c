"""Store the promotion decision of each version, as it was taken when the version was recorded.

Versions recorded before this revision keep NULL: their decision is recomputed when shown.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 21:56:21.313267
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("promotion", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("promotion")
