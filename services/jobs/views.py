"""Training tasks as the API shows them: queries and the public view of their progress."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.models import DatasetItem, Model, Split, Task, TaskStatus
from services.errors import InvalidInput
from services.jobs.failures import public_error
from services.jobs.history import history_points
from services.jobs.lifecycle import get_task
from services.jobs.spec import ResolvedSpec
from services.jobs.timings import timings_view

DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class ProgressView:
    """The worker's last report; ``eta_s`` is derived: remaining images / images per second."""

    epoch: int | None
    epochs: int | None
    step: int | None
    steps: int | None
    loss: float | None
    images_per_s: float | None
    eta_s: float | None
    resumed_from_epoch: int | None  # epochs already done when this attempt started (after a redelivery)
    updated_at: datetime | None
    history: list[tuple[float, float]]  # (fractional epoch, loss) over the run, bounded (jobs/history.py)


@dataclass(frozen=True)
class TaskView:
    id: str
    model: str  # the model's name
    status: str
    classes: dict[str, int]  # the classes this task adds: name -> index in the model
    also_labelled: list[str]
    method: str | None
    architecture: str | None
    progress: ProgressView | None
    error: str | None
    model_version: int | None
    parent_version: int | None
    cancel_requested: bool
    attempts: int  # how many times a worker started it (more than 1 after a redelivery)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    items: dict[str, int]  # {"train": n, "val": m}
    import_report: dict[str, Any] | None = None  # what reading the upload found (formats/base.ImportReport)
    timings: dict[str, Any] | None = None  # where the time went, in seconds (jobs/timings.timings_view)


def task_view(session: Session, task_id: str) -> TaskView:
    task = get_task(session, task_id)
    return view_of(task, item_counts(session, [task.id]).get(task.id), session.get(Model, task.model_id).name)


def list_task_views(session: Session, status: str | None = None, limit: int = DEFAULT_LIMIT, *,
                    model_ids: Sequence[int] | None = None) -> list[TaskView]:
    """Newest first, optionally only those with ``status``; ``model_ids``: only those models' tasks."""
    if status is not None and status not in set(TaskStatus):
        raise InvalidInput(f"unknown status {status!r}; choose one of {', '.join(s.value for s in TaskStatus)}")
    stmt = select(Task).order_by(Task.created_at.desc(), Task.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(Task.status == status)
    if model_ids is not None:
        stmt = stmt.where(Task.model_id.in_(list(model_ids)))
    tasks = list(session.scalars(stmt))
    counts = item_counts(session, [t.id for t in tasks])
    names = dict(session.execute(select(Model.id, Model.name).where(Model.id.in_({t.model_id for t in tasks}))).all())
    return [view_of(t, counts.get(t.id), names[t.model_id]) for t in tasks]


def item_counts(session: Session, task_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """{task id: {"train": n, "val": m}} in one query."""
    if not task_ids:
        return {}
    stmt = (select(DatasetItem.task_id, DatasetItem.split, func.count())
            .where(DatasetItem.task_id.in_(task_ids)).group_by(DatasetItem.task_id, DatasetItem.split))
    out: dict[str, dict[str, int]] = {}
    for task_id, split, n in session.execute(stmt):
        out.setdefault(task_id, {s.value: 0 for s in Split})[split] = n
    return out


def view_of(task: Task, counts: Mapping[str, int] | None, model_name: str) -> TaskView:
    spec = ResolvedSpec.of(task)
    running = task.status == TaskStatus.RUNNING
    return TaskView(
        id=task.id, model=model_name, status=task.status, classes=dict(spec.assigned_classes),
        also_labelled=list(spec.also_labelled), method=spec.method, architecture=spec.architecture,
        progress=progress_view(task.progress, spec.batch_size, task.updated_at, running=running),
        # Cleaned again: rows written before failures.py existed, or by a worker of an older release.
        error=public_error(task.error) if task.error else None,
        model_version=task.model_version, parent_version=task.parent_version,
        cancel_requested=task.cancel_requested, attempts=task.attempts, created_at=task.created_at, started_at=task.started_at,
        finished_at=task.finished_at, items={s.value: 0 for s in Split} | dict(counts or {}),
        import_report=task.import_report,
        timings=timings_view(task.timings, task.created_at, task.started_at, task.finished_at),
    )


def progress_view(progress: Mapping[str, Any] | None, batch_size: int | None, row_updated_at: datetime | None,
                  *, running: bool = True) -> ProgressView | None:
    """The public fields of a worker's report (None before the first one).

    ``step`` counts within the epoch (1..steps); the ETA assumes the images/s of the last report
    holds for the remaining steps of this epoch and the epochs after it.
    """
    if not progress:
        return None
    epoch, epochs = _int(progress.get("epoch")), _int(progress.get("epochs"))
    step, steps = _int(progress.get("step")), _int(progress.get("steps"))
    rate = _float(progress.get("images_per_s"))
    batch = _int(progress.get("batch_size")) or batch_size
    eta = None
    if running and None not in (epoch, epochs, step, steps, batch) and rate and rate > 0:
        remaining_steps = max(0, (epochs - epoch) * steps + (steps - step))
        eta = round(remaining_steps * batch / rate, 1)
    return ProgressView(epoch=epoch, epochs=epochs, step=step, steps=steps, loss=_float(progress.get("loss")),
                        images_per_s=rate, eta_s=eta, resumed_from_epoch=_int(progress.get("resumed_from_epoch")),
                        updated_at=_time(progress.get("updated_at")) or row_updated_at,
                        history=[(x, loss) for x, loss in history_points(progress.get("history"))])


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
