"""Every status change of a training task, here and nowhere else. The task row is the job's state.

    queued --start--> running --succeed--> succeeded
      |                  |------fail-----> failed
      '------cancel------'----cancel-----> cancelled   (a running task stops at its next step)

A task that ends without a version gives its class names back (its indices stay burnt, so a
mask value never changes meaning). Every transition announces itself to the webhooks that want it
(``services/webhooks/events.py``), in the same transaction. The caller commits.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session, object_session

from services.db.base import utcnow
from services.db.models import SemanticClass, Task, TaskStatus
from services.jobs.errors import TaskFinished, TaskNotFound
from services.jobs.failures import public_error
from services.jobs.spec import ResolvedSpec
from services.webhooks import events

FINISHED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
MAX_ERROR_CHARS = 4000


def get_task(session: Session, task_id: str, *, for_update: bool = False) -> Task:
    """The task row; TaskNotFound if there is none. for_update: lock it (Postgres) until commit."""
    task = session.get(Task, task_id, with_for_update=for_update)
    if task is None:
        raise TaskNotFound(f"no task with id {task_id!r}")
    return task


def queue(session: Session, model_id: int, task_id: str, spec: ResolvedSpec, parent_version: int | None, *,
          idempotency_key: str | None, request_sha256: str) -> Task:
    """A new task of a model, queued (its classes and items are the registration's to add)."""
    task = Task(id=task_id, model_id=model_id, kind="train", status=TaskStatus.QUEUED.value, spec=spec.stored(),
                idempotency_key=idempotency_key, request_sha256=request_sha256, parent_version=parent_version)
    session.add(task)
    events.task_event(session, events.TASK_QUEUED, task)
    return task


def start(task: Task, parent_version: int | None) -> None:
    """A worker runs the task now, from ``parent_version``."""
    task.status = TaskStatus.RUNNING
    task.parent_version = parent_version
    task.started_at = task.started_at or utcnow()
    task.attempts = (task.attempts or 0) + 1
    task.error = None
    events.task_event(object_session(task), events.TASK_STARTED, task)


def succeed(task: Task) -> None:
    """The task's version is recorded (in the same transaction)."""
    task.status = TaskStatus.SUCCEEDED
    task.finished_at = utcnow()
    events.task_event(object_session(task), events.TASK_SUCCEEDED, task)


def fail(session: Session, task: Task, error: str) -> None:
    """The attempt failed; ``error`` is kept as API clients will read it (failures.public_error)."""
    task.status = TaskStatus.FAILED
    task.error = public_error(error)[:MAX_ERROR_CHARS]
    task.finished_at = utcnow()
    _release_classes(session, task)
    events.task_event(session, events.TASK_FAILED, task)


def cancel(session: Session, task: Task, reason: str) -> None:
    task.status = TaskStatus.CANCELLED
    task.error = reason
    task.finished_at = utcnow()
    _release_classes(session, task)
    events.task_event(session, events.TASK_CANCELLED, task)


def end_attempt(session: Session, task_id: str, *, failed: str | None = None, cancelled: str | None = None) -> None:
    """A worker's attempt ended without a version: fail or cancel the task, if it still runs
    (another attempt may have finished it meanwhile)."""
    task = get_task(session, task_id)
    if task.status != TaskStatus.RUNNING:
        return
    if cancelled is not None:
        cancel(session, task, cancelled)
    else:
        fail(session, task, failed or "failed")


def request_cancel(session: Session, task_id: str) -> bool:
    """Cancel a task. True: it was queued and is cancelled now (its class names are released).
    False: it is running, and the worker stops it at its next step. TaskFinished if it ended."""
    task = get_task(session, task_id, for_update=True)  # the worker's claim waits for us
    if task.status in FINISHED:
        raise TaskFinished(f"task {task_id} already {task.status}; there is nothing to cancel")
    # Set in both cases: a worker that claimed the task meanwhile still sees it and stops.
    task.cancel_requested = True
    task.updated_at = utcnow()
    if task.status == TaskStatus.QUEUED:
        cancel(session, task, "cancelled by request before training started")
        return True
    return False


def _release_classes(session: Session, task: Task) -> None:
    session.execute(delete(SemanticClass).where(SemanticClass.model_id == task.model_id,
                                                SemanticClass.task_id == task.id))
