"""Claiming a task for training, and finishing it: the task row is the job's state.

Redelivery (a killed worker, a broker restart, the recovery sweep at worker start) may hand the
same task id to a worker more than once; these functions make that safe:
- a finished task (succeeded, failed, cancelled) is skipped;
- a task another live worker is running is "not ready": retried later, and taken over once
  that worker is gone;
- a task whose predecessor has not finished is "not ready" (the worker retries later), because
  the steps of one lineage run one at a time, in order.
"""

from __future__ import annotations

import enum
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import SemanticClass, Task, TaskStatus, WorkerHeartbeat

FINISHED = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED}
# A running task whose worker (on another machine) has not been heard of for this long is taken
# over. Workers report at least every few seconds while training; scoring and uploading a large
# checkpoint can be quiet for a while, hence the margin.
STALE_AFTER = timedelta(minutes=5)


class Claim(enum.Enum):
    RUN = "run"
    SKIP = "skip"
    NOT_READY = "not_ready"


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    reason: str
    parent_version: int | None = None


def resolve_parent(session: Session, task: Task) -> tuple[bool, int | None]:
    """(ready, parent version).

    A task registered while another was pending starts from the version that one produced; if
    that one failed or was cancelled, from what *it* would have started from. A task registered
    with nothing pending starts from the production version of that moment (None: the base model).
    """
    current = task
    while after_id := (current.spec or {}).get("after_task_id"):
        before = session.get(Task, after_id)
        if before is None:
            break
        if before.status == TaskStatus.SUCCEEDED:
            return True, before.model_version
        if before.status not in FINISHED:
            return False, None
        current = before
    return True, current.parent_version


def _alive(row: WorkerHeartbeat) -> bool:
    """A worker on this machine is alive iff its process is; elsewhere, iff it reported lately."""
    host, _, pid = row.hostname.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, under another user
        return True
    return utcnow() - row.last_seen < STALE_AFTER


def _running_elsewhere(session: Session, task: Task, me: str) -> bool:
    rows = session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.current_task_id == task.id))
    return any(r.hostname != me and _alive(r) for r in rows)


def claim(session: Session, task_id: str, me: str) -> ClaimResult:
    """Decide whether this worker runs the task now; on RUN the row is marked running (caller commits)."""
    # Row lock on Postgres (SQLite's BEGIN IMMEDIATE already serialises): two workers handed the
    # same id at once must not both start it.
    task = session.get(Task, task_id, with_for_update=True)
    if task is None:
        return ClaimResult(Claim.SKIP, f"task {task_id} does not exist")
    if task.status in FINISHED:
        return ClaimResult(Claim.SKIP, f"task {task_id} is already {task.status}")
    if task.cancel_requested:
        finish_cancelled(session, task, "cancelled before training started")
        return ClaimResult(Claim.SKIP, f"task {task_id} was cancelled")
    if task.status == TaskStatus.RUNNING and _running_elsewhere(session, task, me):
        # Not SKIP: if that worker dies, this message is what brings the task back.
        return ClaimResult(Claim.NOT_READY, f"task {task_id} is running on another live worker")
    ready, parent = resolve_parent(session, task)
    if not ready:
        return ClaimResult(Claim.NOT_READY, f"task {task_id} waits for {task.spec.get('after_task_id')}")
    task.status = TaskStatus.RUNNING
    task.parent_version = parent
    task.started_at = task.started_at or utcnow()
    task.attempts = (task.attempts or 0) + 1
    task.error = None
    return ClaimResult(Claim.RUN, "claimed", parent)


def release_classes(session: Session, task: Task) -> None:
    """A task that produced nothing gives its class names back (its indices stay burnt)."""
    session.execute(delete(SemanticClass).where(SemanticClass.task_id == task.id))


def finish_failed(session: Session, task: Task, error: str) -> None:
    task.status = TaskStatus.FAILED
    task.error = error[:4000]
    task.finished_at = utcnow()
    release_classes(session, task)


def finish_cancelled(session: Session, task: Task, reason: str) -> None:
    task.status = TaskStatus.CANCELLED
    task.error = reason
    task.finished_at = utcnow()
    release_classes(session, task)
