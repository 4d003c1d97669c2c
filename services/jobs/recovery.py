"""Finding tasks whose broker message may have been lost."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import PENDING_STATUSES, Task


def unfinished_task_ids(session: Session) -> list[str]:
    """Queued and running tasks, oldest first (the order their steps must run in)."""
    return list(session.scalars(select(Task.id).where(Task.status.in_(PENDING_STATUSES)).order_by(Task.created_at)))
