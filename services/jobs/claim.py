"""Deciding whether this worker runs a task now, and from which version.

Redelivery (a killed worker, a broker restart, the recovery sweep at worker start) may hand the
same task id to a worker more than once; ``claim`` makes that safe:
- a finished task (succeeded, failed, cancelled) is skipped;
- a task another live worker is running is "not ready": retried later, and taken over once
  that worker is gone;
- a task whose predecessor has not finished is "not ready" (the worker retries later), because
  the steps of one model run one at a time, in order. Tasks of different models never wait for
  each other: a task's predecessor is the newest pending task of its own model at registration.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.db.models import Task, TaskStatus
from services.jobs import lifecycle
from services.jobs.heartbeats import holders, is_alive
from services.jobs.spec import ResolvedSpec


class Claim(enum.Enum):
    RUN = "run"
    SKIP = "skip"
    NOT_READY = "not_ready"


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    reason: str
    parent_version: int | None = None
    model_id: int | None = None  # the task's model (None: no such task)


def resolve_parent(session: Session, task: Task) -> tuple[bool, int | None]:
    """(ready, parent version).

    A task registered while another was pending starts from the version that one produced; if
    that one failed or was cancelled, from what *it* would have started from. A task registered
    with nothing pending starts from the production version of that moment (None: the base model).
    """
    current = task
    while after_id := ResolvedSpec.of(current).after_task_id:
        before = session.get(Task, after_id)
        if before is None:
            break
        if before.status == TaskStatus.SUCCEEDED:
            return True, before.model_version
        if before.status not in lifecycle.FINISHED:
            return False, None
        current = before
    return True, current.parent_version


def claim(session: Session, task_id: str, me: str) -> ClaimResult:
    """Decide whether this worker runs the task now; on RUN the task is started (caller commits)."""
    # Row lock on Postgres (SQLite's BEGIN IMMEDIATE already serialises): two workers handed the
    # same id at once must not both start it.
    task = session.get(Task, task_id, with_for_update=True)
    if task is None:
        return ClaimResult(Claim.SKIP, f"task {task_id} does not exist")
    model = task.model_id
    if task.status in lifecycle.FINISHED:
        return ClaimResult(Claim.SKIP, f"task {task_id} is already {task.status}", model_id=model)
    if task.cancel_requested:
        lifecycle.cancel(session, task, "cancelled before training started")
        return ClaimResult(Claim.SKIP, f"task {task_id} was cancelled", model_id=model)
    if task.status == TaskStatus.RUNNING and any(r.hostname != me and is_alive(r) for r in holders(session, task.id)):
        # Not SKIP: if that worker dies, this message is what brings the task back.
        return ClaimResult(Claim.NOT_READY, f"task {task_id} is running on another live worker", model_id=model)
    ready, parent = resolve_parent(session, task)
    if not ready:
        return ClaimResult(Claim.NOT_READY, f"task {task_id} waits for {ResolvedSpec.of(task).after_task_id}",
                           model_id=model)
    lifecycle.start(task, parent)
    return ClaimResult(Claim.RUN, "claimed", parent, model_id=model)
