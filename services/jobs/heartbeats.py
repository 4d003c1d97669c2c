"""Which workers are alive, as the workers themselves report it into our own table.

A worker beats while it holds a task (``Heartbeat``) and answers pings through the broker
(``record_heartbeat`` with a token). Whether a worker still lives decides whether its running
task may be taken over (``is_alive``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import WorkerHeartbeat
from services.db.session import session_scope
from services.errors import NotFound

log = logging.getLogger(__name__)

# A running task whose worker (on another machine) has not been heard of for this long is taken
# over. Workers report at least every HEARTBEAT_S while they hold a task; scoring and uploading a
# large checkpoint can be quiet for a while, hence the margin.
STALE_AFTER = timedelta(minutes=5)
HEARTBEAT_S = 30.0  # well inside STALE_AFTER


class PingNotAnswered(NotFound):
    """No worker has answered that ping (yet)."""


def worker_name() -> str:
    """This process's name in the heartbeats table: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_heartbeat(session: Session, queue: str, *, ping_token: str | None = None,
                     current_task_id: str | None = None) -> WorkerHeartbeat:
    """Upsert this process's row; the caller commits."""
    hostname = worker_name()
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


def find_ping(session: Session, token: str) -> WorkerHeartbeat:
    """The worker that answered ping ``token``; PingNotAnswered if none has."""
    row = session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.last_ping_token == token)).first()
    if row is None:
        raise PingNotAnswered(f"no worker has answered ping {token!r} (yet)")
    return row


def is_alive(row: WorkerHeartbeat) -> bool:
    """A worker on this machine is alive iff its process is; elsewhere, iff it reported lately."""
    alive = local_process_alive(row.hostname)
    return alive if alive is not None else utcnow() - row.last_seen < STALE_AFTER


def local_process_alive(name: str) -> bool | None:
    """Whether the process ``name`` (``worker_name()``'s "host:pid") lives; None when it ran on
    another machine, where this one cannot tell."""
    host, _, pid = name.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, under another user
    return True


def holders(session: Session, task_id: str) -> list[WorkerHeartbeat]:
    """The workers that say they hold ``task_id``."""
    return list(session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.current_task_id == task_id)))


class Heartbeat:
    """Tells the others this worker holds the task, every HEARTBEAT_S, for the whole job: downloads,
    training, scoring and uploads alike (so nobody takes over a task that is merely quiet)."""

    def __init__(self, sessions: sessionmaker, queue: str, task_id: str) -> None:
        self.sessions, self.queue, self.task_id = sessions, queue, task_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{task_id}", daemon=True)

    def _beat(self, task_id: str | None) -> None:
        try:
            with session_scope(self.sessions) as session:
                record_heartbeat(session, self.queue, current_task_id=task_id)
        except SQLAlchemyError:
            log.warning("heartbeat not recorded (database busy or away); trying again", exc_info=True)

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            self._beat(self.task_id)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._beat(None)
