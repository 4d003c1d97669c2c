"""What a running task tells its row while it trains, and what it reads back: the trainer's progress
(at most once per REPORT_EVERY_S, and at every epoch's end, with the loss history of
``jobs/history.py`` and the epoch's webhook event) and the cancel flag (as often)."""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from services.db.base import utcnow
from services.db.models import Task
from services.db.session import session_scope
from services.jobs.history import fractional_epoch, with_point
from services.learning.trainer import Progress
from services.webhooks import events

log = logging.getLogger(__name__)
REPORT_EVERY_S = 1.0  # progress reaches the task row at most about once a second


class ProgressWriter:
    """Writes the trainer's progress to the task row, at most once per REPORT_EVERY_S (and always
    an epoch's last step: its ``task.epoch_finished`` event goes out with it, once per epoch)."""

    def __init__(self, sessions: sessionmaker, task_id: str) -> None:
        self.sessions, self.task_id, self.last = sessions, task_id, 0.0
        self.resumed_from_epoch: int | None = None  # epochs done before this attempt (a resume)

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        epoch_end = p.step == p.steps
        if now - self.last < REPORT_EVERY_S and not epoch_end:
            return
        self.last = now
        if self.resumed_from_epoch is None:
            self.resumed_from_epoch = p.epoch - 1
        try:
            with session_scope(self.sessions) as session:
                task = session.get(Task, self.task_id)
                # The history comes from the row, not from this writer: an attempt that resumes a
                # redelivered task on another worker continues the earlier attempts' curve.
                before = task.progress or {}
                history = with_point(before.get("history"), fractional_epoch(p.epoch, p.step, p.steps),
                                     p.loss, p.epochs)
                # The last epoch announced is kept on the row: an attempt that re-does an epoch (a
                # redelivery resuming from an earlier checkpoint) does not announce it again, and
                # one whose end could not be written is announced by the next write.
                announced = before.get("epoch_announced") or 0
                done = p.epoch if epoch_end else p.epoch - 1
                task.progress = {"epoch": p.epoch, "epochs": p.epochs, "step": p.step, "steps": p.steps,
                                 "loss": round(p.loss, 5), "lr": p.lr, "images_per_s": round(p.images_per_s, 2),
                                 "resumed_from_epoch": self.resumed_from_epoch,
                                 "updated_at": utcnow().isoformat(), "history": history,
                                 "epoch_announced": max(announced, done)}
                if done > announced:
                    events.task_event(session, events.TASK_EPOCH_FINISHED, task, epoch=done, epochs=p.epochs,
                                      loss=round(p.loss, 5) if epoch_end else None)
        except SQLAlchemyError:
            # A busy or restarting database must not fail hours of training: the next report retries.
            log.warning("progress of task %s not recorded", self.task_id, exc_info=True)


class CancelCheck:
    """Reads the task's cancel flag, at most once per REPORT_EVERY_S."""

    def __init__(self, sessions: sessionmaker, task_id: str) -> None:
        self.sessions, self.task_id, self.last, self.cancelled = sessions, task_id, 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last >= REPORT_EVERY_S:
            self.last = now
            try:
                with self.sessions() as session:
                    self.cancelled = bool(session.get(Task, self.task_id).cancel_requested)
            except SQLAlchemyError:
                log.warning("cancel flag of task %s not read; asking again later", self.task_id, exc_info=True)
        return self.cancelled
