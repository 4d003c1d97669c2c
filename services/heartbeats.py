"""Which workers are alive, as the workers themselves report it into our own table."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import WorkerHeartbeat


def record_heartbeat(session: Session, queue: str, *, ping_token: str | None = None,
                     current_task_id: str | None = None) -> WorkerHeartbeat:
    """Upsert this process's row; the caller commits."""
    hostname = f"{socket.gethostname()}:{os.getpid()}"
    row = session.get(WorkerHeartbeat, hostname)
    if row is None:
        row = WorkerHeartbeat(hostname=hostname, pid=os.getpid(), queue=queue, last_seen=utcnow())
        session.add(row)
    row.queue = queue
    row.last_seen = utcnow()
    row.current_task_id = current_task_id
    if ping_token is not None:
        row.last_ping_token = ping_token
    return row


def list_workers(session: Session, *, seen_within: timedelta | None = None) -> list[WorkerHeartbeat]:
    stmt = select(WorkerHeartbeat).order_by(WorkerHeartbeat.last_seen.desc())
    if seen_within is not None:
        stmt = stmt.where(WorkerHeartbeat.last_seen >= utcnow() - seen_within)
    return list(session.scalars(stmt))


def find_ping(session: Session, token: str) -> WorkerHeartbeat | None:
    return session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.last_ping_token == token)).first()


