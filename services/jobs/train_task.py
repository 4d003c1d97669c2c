"""One incremental step, from a task id to a recorded version.

claim -> plan -> fetch data -> parent checkpoint (sha256 checked) -> grow classifier -> train
(distilling from the frozen parent; a checkpoint every epoch, so a redelivered task resumes) ->
score every known class -> upload the checkpoint -> ONE transaction: version + metrics + task
status (+ the production alias when the promotion policy holds).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from services.config import Settings
from services.data.step_dataset import SegmentationDataset
from services.data.transforms import TrainTransform
from services.db.base import utcnow
from services.db.models import ModelVersion, Task, TaskStatus
from services.db.session import session_scope
from services.heartbeats import record_heartbeat
from services.jobs.claim import Claim, claim, finish_cancelled, finish_failed
from services.jobs.classes import channel_names, local_to_channel_lut
from services.jobs.data import fetch, fetch_items, local_source
from services.jobs.plan import StepPlan, build_plan
from services.jobs.scoring import score_classes
from services.learning.checkpoint import load_model, save_model
from services.learning.growth import grow_classifier
from services.learning.methods import build_method
from services.learning.trainer import Progress, TrainConfig, TrainingCancelled, resolve_device, train
from services.learning.zoo import build_model
from services.registry.versions import next_version_number, record_version
from services.storage import ObjectStore

log = logging.getLogger(__name__)
REPORT_EVERY_S = 1.0  # progress reaches the task row at most about once a second
HEARTBEAT_S = 30.0  # well inside claim.STALE_AFTER


class NotReady(Exception):
    """The task waits for the step before it; try again later."""


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    sessions: sessionmaker
    store: ObjectStore
    worker_name: str


def run_training_task(ctx: JobContext, task_id: str) -> str:
    """Run the task if it is this worker's to run; return what happened, in words."""
    with session_scope(ctx.sessions) as session:
        result = claim(session, task_id, ctx.worker_name)
        if result.claim is Claim.RUN:
            record_heartbeat(session, ctx.settings.training_queue, current_task_id=task_id)
    if result.claim is Claim.NOT_READY:
        raise NotReady(result.reason)
    if result.claim is Claim.SKIP:
        _clean_up(ctx, task_id)  # a cancelled or finished task may have left an epoch checkpoint
        return result.reason
    with _Heartbeat(ctx, task_id):
        try:
            with ctx.sessions() as session:
                plan = build_plan(session, task_id, result.parent_version)
            version = _run_step(ctx, plan)
        except TrainingCancelled as err:
            reason = str(err)
            _finish(ctx, task_id, lambda s, t: finish_cancelled(s, t, reason))
            _clean_up(ctx, task_id)
            return f"task {task_id} cancelled"
        except Exception as err:
            log.exception("task %s failed", task_id)
            error = f"{type(err).__name__}: {err}"
            _finish(ctx, task_id, lambda s, t: finish_failed(s, t, error))
            _clean_up(ctx, task_id)
            return f"task {task_id} failed: {err}"
    _clean_up(ctx, task_id)
    return f"task {task_id} produced version {version}"


class _Heartbeat:
    """Tells the others this worker holds the task, every HEARTBEAT_S, for the whole job: downloads,
    training, scoring and uploads alike (so nobody takes over a task that is merely quiet)."""

    def __init__(self, ctx: JobContext, task_id: str) -> None:
        self.ctx, self.task_id = ctx, task_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{task_id}", daemon=True)

    def _beat(self, task_id: str | None) -> None:
        try:
            with session_scope(self.ctx.sessions) as session:
                record_heartbeat(session, self.ctx.settings.training_queue, current_task_id=task_id)
        except SQLAlchemyError:
            log.warning("heartbeat not recorded (database busy or away); trying again", exc_info=True)

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            self._beat(self.task_id)

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._beat(None)


def _finish(ctx: JobContext, task_id: str, mark: Callable) -> None:
    with session_scope(ctx.sessions) as session:
        task = session.get(Task, task_id)
        if task.status == TaskStatus.RUNNING:
            mark(session, task)


def _train_dir(settings: Settings, task_id: str) -> Path:
    return settings.cache_dir / "train" / task_id


def _state_key(task_id: str) -> str:
    """Where the epoch checkpoint is copied, so a task redelivered to another machine resumes too."""
    return f"training/{task_id}/last.pt"


def _restore_state(ctx: JobContext, task_id: str) -> Path:
    """The local training dir, holding the newest epoch checkpoint (from the store if not here)."""
    directory = _train_dir(ctx.settings, task_id)
    local = directory / "last.pt"
    if not local.exists() and ctx.store.exists(_state_key(task_id)):
        directory.mkdir(parents=True, exist_ok=True)
        ctx.store.download(_state_key(task_id), local)
    return directory


def _clean_up(ctx: JobContext, task_id: str) -> None:
    shutil.rmtree(_train_dir(ctx.settings, task_id), ignore_errors=True)
    ctx.store.delete(_state_key(task_id))


def _hyperparameters_given(plan: StepPlan) -> dict:
    """The hyperparameters the client set (None = the engine's default)."""
    return {k: v for k, v in (plan.spec.get("hyperparameters") or {}).items() if v is not None}


def _run_step(ctx: JobContext, plan: StepPlan) -> int:
    hp = _hyperparameters_given(plan)
    device = resolve_device(str(hp.get("device", "auto")))
    if plan.parent is None:  # the base model: plain cross-entropy, nothing to distil from
        method = build_method("ft", 0)
    else:
        method = build_method(plan.spec["method"], len(plan.old_classes),
                              **{k: hp[k] for k in ("lambda_d", "lambda_e", "lambda_u", "ld_form") if k in hp})
    model, teacher = _models(ctx, plan, hp, method.classifier_init)
    names = channel_names(plan.class_map)
    config = TrainConfig(
        epochs=int(plan.spec["epochs"]), batch_size=int(plan.spec["batch_size"]),
        lr=float(hp.get("lr", 0.01)), momentum=float(hp.get("momentum", 0.9)),
        weight_decay=float(hp.get("weight_decay", 1e-4)), lr_power=float(hp.get("lr_power", 0.9)),
        seed=int(hp.get("seed", 0)),
        device=str(device), log_every=5,  # reports sync the GPU; the writer throttles further
    )
    trained = train(
        model, method, _train_dataset(ctx, plan), config, teacher=teacher, class_map=names,
        checkpoint_dir=_restore_state(ctx, plan.task_id),
        on_progress=_ProgressWriter(ctx, plan.task_id), should_cancel=_CancelCheck(ctx, plan.task_id),
        on_checkpoint=lambda path: ctx.store.put_file(_state_key(plan.task_id), path),
    )
    scores = score_classes(trained, plan.class_map, _scoring_sets(ctx, plan), int(plan.spec["image_size"]), device)
    return _record(ctx, plan, trained.cpu(), names, scores, method.name)


def _models(ctx: JobContext, plan: StepPlan, hp: dict, init: str):
    """(model to train, frozen teacher or None): a new base model, or the parent grown by the new classes."""
    if plan.parent is None:
        weights = hp.get("backbone_weights")
        model = build_model(plan.architecture, len(plan.class_map),
                            pretrained_backbone=bool(hp.get("pretrained_backbone", True)),
                            backbone_weights=Path(weights) if weights else None)
        return model, None
    path = ctx.settings.cache_dir / "checkpoints" / str(plan.parent.version) / "model.pt"
    fetch(ctx.store, plan.parent.checkpoint_key, plan.parent.checkpoint_sha256, path)
    teacher = load_model(path, expected_sha256=plan.parent.checkpoint_sha256).model
    teacher.requires_grad_(False)
    model = grow_classifier(teacher, len(plan.new_classes), init=init,
                            generator=torch.Generator().manual_seed(int(hp.get("seed", 0))))
    return model, teacher


def _train_dataset(ctx: JobContext, plan: StepPlan) -> SegmentationDataset:
    pairs = fetch_items(ctx.store, plan.train_items, ctx.settings.cache_dir)
    lut = local_to_channel_lut(plan.spec, plan.assigned, plan.class_map)
    source = local_source(plan.task_id, "train", pairs, list(plan.class_map.values()))
    # Augmentation draws from torch's global RNG, which the trainer seeds and saves in every epoch
    # checkpoint: a resumed run then sees the same crops and flips as an uninterrupted one.
    return SegmentationDataset(source, None, lut, TrainTransform(int(plan.spec["image_size"])))


def _scoring_sets(ctx: JobContext, plan: StepPlan) -> list:
    """Every task that introduced a class of the new version, with its validation files fetched."""
    return [(t, fetch_items(ctx.store, t.val_items, ctx.settings.cache_dir)) for t in plan.scoring]


def _record(ctx: JobContext, plan: StepPlan, model, names: dict[int, str], scores, method: str) -> int:
    with session_scope(ctx.sessions) as session:
        version = next_version_number(session)
    local = _train_dir(ctx.settings, plan.task_id) / "model.pt"
    meta = {"task_id": plan.task_id, "version": version, "parent": plan.parent.version if plan.parent else None,
            "class_indices": sorted(plan.class_map)}
    digest = save_model(local, model, names, meta)
    # The digest in the key: two attempts that raced to the same version number can never
    # overwrite the bytes a recorded version points at.
    key = f"checkpoints/{version}/model-{digest[:16]}.pt"
    info = ctx.store.put_file(key, local)
    try:
        with session_scope(ctx.sessions) as session:
            task = session.get(Task, plan.task_id)
            row, _decision = record_version(
                session, task=task, parent_version=plan.parent.version if plan.parent else None,
                architecture=plan.architecture, method=method, hyperparameters=_hyperparameters(plan),
                class_map={str(k): v for k, v in plan.class_map.items()}, checkpoint_key=key,
                checkpoint_sha256=digest, checkpoint_bytes=info.size,
                metrics={i: (s.iou, s.tp, s.fp, s.fn) for i, s in scores.items()},
                old_classes=plan.old_classes, new_classes=plan.new_classes,
                version=version, settings=ctx.settings,
            )
            task.status = TaskStatus.SUCCEEDED
            task.finished_at = utcnow()
            return row.version
    except Exception as err:
        # Nothing references our upload unless it is the recorded version's own: remove it.
        with session_scope(ctx.sessions) as session:
            existing = session.query(ModelVersion).filter_by(task_id=plan.task_id).one_or_none()
        if existing is None or existing.checkpoint_key != key:
            ctx.store.delete(key)
        if existing is not None and isinstance(err, IntegrityError):
            return existing.version  # another attempt recorded this task's one version first
        raise


def _hyperparameters(plan: StepPlan) -> dict:
    keys = ("epochs", "batch_size", "image_size", "val_fraction")
    return {**{k: plan.spec[k] for k in keys if k in plan.spec}, **_hyperparameters_given(plan)}


class _ProgressWriter:
    """Writes the trainer's progress to the task row, at most once per REPORT_EVERY_S."""

    def __init__(self, ctx: JobContext, task_id: str) -> None:
        self.ctx, self.task_id, self.last = ctx, task_id, 0.0
        self.resumed_from_epoch: int | None = None  # epochs done before this attempt (a resume)

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        final = p.epoch == p.epochs and p.step == p.steps
        if now - self.last < REPORT_EVERY_S and not final:
            return
        self.last = now
        if self.resumed_from_epoch is None:
            self.resumed_from_epoch = p.epoch - 1
        try:
            with session_scope(self.ctx.sessions) as session:
                task = session.get(Task, self.task_id)
                task.progress = {"epoch": p.epoch, "epochs": p.epochs, "step": p.step, "steps": p.steps,
                                 "loss": round(p.loss, 5), "lr": p.lr, "images_per_s": round(p.images_per_s, 2),
                                 "resumed_from_epoch": self.resumed_from_epoch,
                                 "updated_at": utcnow().isoformat()}
        except SQLAlchemyError:
            # A busy or restarting database must not fail hours of training: the next report retries.
            log.warning("progress of task %s not recorded", self.task_id, exc_info=True)


class _CancelCheck:
    """Reads the task's cancel flag, at most once per REPORT_EVERY_S."""

    def __init__(self, ctx: JobContext, task_id: str) -> None:
        self.ctx, self.task_id, self.last, self.cancelled = ctx, task_id, 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last >= REPORT_EVERY_S:
            self.last = now
            try:
                with self.ctx.sessions() as session:
                    self.cancelled = bool(session.get(Task, self.task_id).cancel_requested)
            except SQLAlchemyError:
                log.warning("cancel flag of task %s not read; asking again later", self.task_id, exc_info=True)
        return self.cancelled
