"""The transactional outbox of training messages: ``tasks.dispatched_at``.

A task row is committed with ``dispatched_at`` NULL: its broker message is still owed. The API
sends it right after the commit and stamps the row; when the broker is down the row stays NULL
and a relay (in every worker, and in the API) sends it once the broker is back. No accepted task
depends on a message that was never sent.

Tasks registered before this revision are taken as dispatched (their messages were sent, or a
worker's start-up sweep re-sends every unfinished task anyway).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE tasks SET dispatched_at = created_at")
    # The relay's query: undispatched pending tasks, oldest first.
    op.create_index("ix_tasks_dispatched_at", "tasks", ["dispatched_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_dispatched_at", table_name="tasks")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("dispatched_at")
