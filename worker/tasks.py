"""Celery tasks: take ids, re-fetch what they need, delegate to ``services``."""

from __future__ import annotations

import logging
import multiprocessing
import os

from billiard.process import current_process
from celery.signals import worker_process_init, worker_ready

from services.broker import PING_TASK, TRAIN_TASK
from services.config import get_settings
from services.db.session import make_engine, make_session_factory, session_scope
from services.jobs.errors import NotReady
from services.jobs.heartbeats import record_heartbeat, worker_name
from worker.app import app
from worker.gpus import device_for_child
from worker.threads import threads_for_child

log = logging.getLogger(__name__)
_sessions = None
RETRY_NOT_READY_S = 15


@worker_process_init.connect
def _fresh_resources_after_fork(**_: object) -> None:
    """Each pool process opens its own database connections (never share them across fork), sees
    its own GPU (set before anything in it initialises CUDA) and its share of the CPU threads."""
    global _sessions
    _sessions = None
    # Pool children are daemonic, and a daemonic process may not start processes of its own: the
    # training loader's workers (STRATA_TRAIN_LOADER_WORKERS) must be its children. They exit when
    # it dies: torch's loader workers watch their parent.
    multiprocessing.current_process().daemon = False
    settings = get_settings()
    device = device_for_child(getattr(current_process(), "index", 0), settings.worker_concurrency,
                              os.environ.get("CUDA_VISIBLE_DEVICES"), settings.gpus_per_task)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    threads = threads_for_child(settings.worker_threads, settings.worker_concurrency, os.cpu_count(),
                                os.environ.get("OMP_NUM_THREADS"))
    if threads is not None:  # read by torch when the first task imports it, in this process
        os.environ["OMP_NUM_THREADS"] = str(threads)


def sessions():
    global _sessions
    if _sessions is None:
        _sessions = make_session_factory(make_engine(get_settings()))
    return _sessions


@app.task(name=PING_TASK)
def ping(token: str) -> str:
    """A round trip through the broker: the worker records the token in its heartbeat row."""
    with session_scope(sessions()) as session:
        record_heartbeat(session, get_settings().training_queue, ping_token=token)
    return token


@app.task(name=TRAIN_TASK, bind=True, max_retries=None)
def train(self, task_id: str) -> str:
    """Train the next model version for ``task_id`` (idempotent: safe to deliver twice)."""
    # Imported here: the parent (main) worker process must never import torch/initialise CUDA.
    from services.jobs.context import JobContext
    from services.jobs.run import run_training_task
    from services.storage import open_store

    settings = get_settings()
    ctx = JobContext(settings, sessions(), open_store(settings), worker_name())
    try:
        outcome = run_training_task(ctx, task_id)
    except NotReady as err:
        raise self.retry(countdown=RETRY_NOT_READY_S, exc=err) from None
    log.info(outcome)
    return outcome


@worker_ready.connect
def _recover_unfinished(sender=None, **_: object) -> None:
    """Re-send every unfinished task: a message lost with a killed worker (the filesystem broker
    drops a message once taken) or never sent (the API died after its commit) is recovered here.
    Duplicates are harmless: a task runs once and finished tasks are skipped."""
    from services.jobs.recovery import unfinished_task_ids

    with session_scope(sessions()) as session:
        ids = unfinished_task_ids(session)
    for task_id in ids:
        app.send_task(TRAIN_TASK, args=[task_id], queue=get_settings().training_queue)
    if ids:
        log.info("re-sent %d unfinished task(s): %s", len(ids), ", ".join(ids))
    global _sessions
    _sessions = None  # the pool forks after this: children open their own connections
