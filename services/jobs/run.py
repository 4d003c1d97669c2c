"""A training task, from its id to a recorded version: what a worker does with ``strata.train``.

claim -> plan -> fetch data -> parent checkpoint (sha256 checked) -> ``learning.step.run_step``
(grow the classifier, train against the frozen parent with a checkpoint every epoch, so a
redelivered task resumes; score every known class) -> upload the checkpoint -> ONE transaction:
version + metrics + task status (+ the production alias when the promotion policy holds).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from services.db.session import session_scope
from services.jobs import lifecycle
from services.jobs.claim import Claim, claim
from services.jobs.context import JobContext
from services.jobs.datasets import class_scores, scoring_sets, train_set
from services.jobs.errors import NotReady
from services.jobs.failures import describe
from services.jobs.heartbeats import Heartbeat, record_heartbeat
from services.jobs.plan import StepPlan, build_plan
from services.jobs.progress import CancelCheck, ProgressWriter
from services.jobs.record import record_step
from services.jobs.timings import Stopwatch
from services.learning.checkpoint import load_model
from services.learning.classmap import channel_names
from services.learning.step import StepHooks, run_step
from services.learning.trainer import TrainingCancelled
from services.learning.zoo import SegModel
from services.storage.cache import checkpoint_path, fetch, training_dir
from services.storage.keys import training_state_key

log = logging.getLogger(__name__)
# Progress reports sync the GPU; the progress writer throttles further.
WORKER_TRAIN_SETTINGS = {"log_every": 5}
MAX_LOADER_WORKERS = 8  # enough to keep a GPU fed at the papers' crop (bench/gpu.sh measures it)


def run_training_task(ctx: JobContext, task_id: str) -> str:
    """Run the task if it is this worker's to run; return what happened, in words.
    Raises NotReady when it must wait (the caller retries later)."""
    with session_scope(ctx.sessions) as session:
        result = claim(session, task_id, ctx.worker_name)
        if result.claim is Claim.RUN:
            record_heartbeat(session, ctx.settings.training_queue, current_task_id=task_id)
    if result.claim is Claim.NOT_READY:
        raise NotReady(result.reason)
    if result.claim is Claim.SKIP:
        if result.model_id is not None:  # a cancelled or finished task may have left an epoch checkpoint
            _clean_up(ctx, result.model_id, task_id)
        return result.reason
    with Heartbeat(ctx.sessions, ctx.settings.training_queue, task_id):
        try:
            with ctx.sessions() as session:
                plan = build_plan(session, task_id, result.parent_version)
            version = _train_and_record(ctx, plan)
        except TrainingCancelled as err:
            _end(ctx, result.model_id, task_id, cancelled=str(err))
            return f"task {task_id} cancelled"
        except Exception as err:
            log.exception("task %s failed", task_id)
            _end(ctx, result.model_id, task_id, failed=describe(err))
            return f"task {task_id} failed: {err}"
    _clean_up(ctx, result.model_id, task_id)
    return f"task {task_id} produced version {version}"


def _train_and_record(ctx: JobContext, plan: StepPlan) -> int:
    train = {**WORKER_TRAIN_SETTINGS, "num_workers": loader_workers(ctx.settings.train_loader_workers)}
    config = plan.spec.step_config(first=plan.parent is None, step_index=plan.step_index, train=train,
                                   weights_dir=ctx.settings.backbone_weights_dir)
    cache = ctx.settings.cache_dir
    watch = Stopwatch()
    with watch.phase("fetch"):
        scoring = scoring_sets(ctx.store, cache, plan)  # fetched before the hours of training: fail early
        training = train_set(ctx.store, cache, plan, cache_mb=ctx.settings.train_cache_mb)
        parent = _parent_model(ctx, plan)
    hooks = StepHooks(
        checkpoint_dir=_restore_state(ctx, plan.model_id, plan.task_id),
        on_progress=ProgressWriter(ctx.sessions, plan.task_id), should_cancel=CancelCheck(ctx.sessions, plan.task_id),
        on_checkpoint=lambda path: ctx.store.put_file(training_state_key(plan.model_id, plan.task_id), path),
    )
    result = run_step(config, parent, channel_names(plan.class_map), training, [s for _, s in scoring], hooks,
                      processes=ctx.settings.gpus_per_task)
    for name, seconds in result.seconds.items():
        watch.add(name, seconds)
    scores = class_scores(plan, [task for task, _ in scoring], result.scores)
    return record_step(ctx, plan, result.model.cpu(), scores, result.method, watch)


def loader_workers(setting: int | None, threads: int | None = None) -> int:
    """Loader processes for a training process: the setting (STRATA_TRAIN_LOADER_WORKERS) when
    given, else half the CPU threads this process trains with (``threads``, default torch's count,
    which the worker sets per pool child), at most MAX_LOADER_WORKERS. On the CPU the step and the
    loader share the cores; bench/bench_time_to_version.py measured the choice (docs/results.md)."""
    if setting is not None:
        return setting
    if threads is None:
        threads = torch.get_num_threads()
    return min(MAX_LOADER_WORKERS, threads // 2)


def _parent_model(ctx: JobContext, plan: StepPlan) -> SegModel | None:
    """The parent version's model (its checkpoint fetched and sha256 checked), None for a base model."""
    if plan.parent is None:
        return None
    path = fetch(ctx.store, plan.parent.checkpoint_key, plan.parent.checkpoint_sha256,
                 checkpoint_path(ctx.settings.cache_dir, plan.parent.model_id, plan.parent.version))
    return load_model(path, expected_sha256=plan.parent.checkpoint_sha256).model


def _restore_state(ctx: JobContext, model_id: int, task_id: str) -> Path:
    """The local training dir, holding the newest epoch checkpoint (from the store if not here), so
    a task redelivered to another machine resumes too."""
    directory = training_dir(ctx.settings.cache_dir, task_id)
    local = directory / "last.pt"
    key = training_state_key(model_id, task_id)
    if not local.exists() and ctx.store.exists(key):
        directory.mkdir(parents=True, exist_ok=True)
        ctx.store.download(key, local)
    return directory


def _end(ctx: JobContext, model_id: int, task_id: str, *, failed: str | None = None,
         cancelled: str | None = None) -> None:
    with session_scope(ctx.sessions) as session:
        lifecycle.end_attempt(session, task_id, failed=failed, cancelled=cancelled)
    _clean_up(ctx, model_id, task_id)


def _clean_up(ctx: JobContext, model_id: int, task_id: str) -> None:
    shutil.rmtree(training_dir(ctx.settings.cache_dir, task_id), ignore_errors=True)
    ctx.store.delete(training_state_key(model_id, task_id))
