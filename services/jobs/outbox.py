"""The transactional outbox of training messages: no accepted task depends on a message that was
never sent.

A task is committed with ``dispatched_at`` NULL (the message is owed) in the same transaction as
everything else about it. Sending happens after the commit, by ``dispatch``: right away by the API,
and again by a relay that every worker (and the API) runs every few seconds, so a task accepted
while the broker was down is sent once it is back, with no process restarted. A message is
stamped sent only after the broker took it; a send that fails leaves the row owed.

The relay also owes a new message for a task left *running* by a worker that died (no live
holder): with Redis the unacknowledged message would come back only after the visibility timeout
(hours), and the filesystem broker drops a taken message for good. It re-owes at most once per
``STALE_AFTER`` per task. A holder on this machine is dead when its process is; one on another
machine when its heartbeat is older than ``STALE_AFTER``, judged only once this process has reached
the database for that long (``Relay``), and with the hosts' clocks in step (NTP).

Duplicates are harmless anyway (``claim`` runs a task once and skips finished ones); the row lock
taken here only keeps the API and the relays from sending the same owed message twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.errors import CONNECTION_ERRORS
from services.db.models import Task, TaskStatus, WorkerHeartbeat
from services.db.session import session_scope
from services.jobs.heartbeats import STALE_AFTER, holders, local_process_alive

log = logging.getLogger(__name__)

BATCH = 100  # owed messages sent per transaction
Send = Callable[[str], None]  # sends the training message of a task id; raises if the broker refuses


def dispatch(sessions: sessionmaker[Session], send: Send, task_ids: Sequence[str] | None = None) -> list[str]:
    """Send the owed messages (of ``task_ids``, or of every queued or running task) oldest first,
    and stamp each one sent. Returns the ids sent. A failing send stops the batch and is raised:
    the rows sent before it are stamped, the rest stay owed."""
    sent: list[str] = []
    failure: Exception | None = None
    with session_scope(sessions) as session:
        for task in _owed(session, task_ids):
            try:
                send(task.id)
            except Exception as err:  # committed below all the same: the stamps of what was sent
                failure = err
                break
            task.dispatched_at = utcnow()
            sent.append(task.id)
    if failure is not None:
        raise failure
    return sent


def reowe_orphans(session: Session, *, judge_remote: bool = True) -> list[str]:
    """Owe a new message for every running task whose holders are all gone and whose last message
    is older than ``STALE_AFTER``; returns their ids (the caller commits, then dispatches).

    A holder on this machine is gone when its process is. One on another machine is judged by its
    heartbeat only with ``judge_remote``: a caller that could not reach the database lately must not
    take the heartbeats that could not be written meanwhile for deaths (see ``Relay``)."""
    stale = utcnow() - STALE_AFTER
    running = session.scalars(select(Task).where(
        Task.status == TaskStatus.RUNNING.value, Task.dispatched_at.is_not(None), Task.dispatched_at < stale))
    orphans = []
    for task in running:
        found = holders(session, task.id)
        if all(_gone(h, judge_remote) for h in found) and (found or judge_remote):
            orphans.append(task.id)
    if orphans:
        session.execute(update(Task).where(Task.id.in_(orphans)).values(dispatched_at=None))
    return orphans


def _gone(holder: WorkerHeartbeat, judge_remote: bool) -> bool:
    alive = local_process_alive(holder.hostname)
    if alive is not None:
        return not alive
    return judge_remote and utcnow() - holder.last_seen >= STALE_AFTER


def relay(sessions: sessionmaker[Session], send: Send, *, judge_remote: bool = True) -> list[str]:
    """One pass of the relay: re-owe orphaned running tasks, then send everything owed."""
    with session_scope(sessions) as session:
        orphans = reowe_orphans(session, judge_remote=judge_remote)
    if orphans:
        log.warning("re-sending %d task(s) left running by a worker that is gone: %s", len(orphans), ", ".join(orphans))
    sent: list[str] = []
    while batch := dispatch(sessions, send):
        sent += batch
        if len(batch) < BATCH:
            break
    if sent:
        log.info("relayed %d owed training message(s): %s", len(sent), ", ".join(sent))
    return sent


class Relay:
    """The relay of one process: passes of ``relay``, judging other machines' workers by their
    heartbeats only once the database has been reachable for ``STALE_AFTER`` without a break (after
    an outage every heartbeat is stale, the living ones included, until they write again)."""

    def __init__(self, sessions: sessionmaker[Session], send: Send) -> None:
        self.sessions, self.send = sessions, send
        self.reachable_since = time.monotonic()

    def run_once(self) -> list[str]:
        judge_remote = time.monotonic() - self.reachable_since >= STALE_AFTER.total_seconds()
        try:
            return relay(self.sessions, self.send, judge_remote=judge_remote)
        except CONNECTION_ERRORS:
            self.reachable_since = time.monotonic()  # counted again from the next pass that reaches it
            raise


def _owed(session: Session, task_ids: Sequence[str] | None) -> list[Task]:
    stmt = select(Task).where(Task.dispatched_at.is_(None),
                              Task.status.in_((TaskStatus.QUEUED.value, TaskStatus.RUNNING.value)))
    if task_ids is not None:
        stmt = stmt.where(Task.id.in_(task_ids))
    # SKIP LOCKED: a row another relay is sending right now is theirs (Postgres; SQLite's
    # BEGIN IMMEDIATE already serialises the transactions).
    stmt = stmt.order_by(Task.created_at, Task.id).limit(BATCH).with_for_update(skip_locked=True)
    return list(session.scalars(stmt))
