"""The training loop: plain functions that receive everything they use.

``train`` runs one incremental step: SGD with momentum and weight decay on the trainable
parameters, poly learning-rate decay per iteration, the method's losses (with the frozen
previous model as teacher when the method needs one), a checkpoint after every epoch, and
resumption from that checkpoint to the same result. ``train_step`` is one optimisation step,
shared with the benchmarks.

Precision: on CUDA with ``amp`` the forward passes run under bf16 autocast where the GPU supports
it, else fp16 with a GradScaler; on the CPU everything stays float32. CUDA is only touched when
``train`` runs on it, never at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from services.labels import IGNORE_INDEX
from services.learning import balance, batchnorm
from services.learning.checkpoint import (
    LoadedModel,
    capture_rng_state,
    check_class_map,
    load_model,
    load_training_state,
    restore_rng_state,
    save_model,
    save_training_state,
)
from services.learning.config import RESUME_FIELDS, TrainConfig
from services.learning.distributed import Group
from services.learning.methods import Method
from services.learning.sampling import EpochSampler, SeededItems
from services.learning.zoo import SegModel, SegOutput

__all__ = [
    "Progress", "TrainingCancelled", "TrainingDiverged", "train", "train_step", "resolve_device",
    "autocast_dtype", "build_optimizer", "build_scheduler", "build_scaler", "save_model", "load_model",
    "LoadedModel",
]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Progress:
    """A progress report: epoch and step count from 1; loss (the total) and lr are this step's;
    images_per_s is measured since the previous report."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float
    images_per_s: float
    terms: dict[str, float] = field(default_factory=dict)  # each weighted loss term at this step


class TrainingCancelled(Exception):
    """``should_cancel`` said stop; the last epoch checkpoint (if any) can resume the run."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are garbage from there on, so the run stops
    instead of producing (and scoring, and maybe promoting) a broken model."""


def train(
    model: SegModel,
    method: Method,
    dataset: Dataset,
    config: TrainConfig,
    *,
    teacher: SegModel | None = None,
    class_map: Mapping[int, str],
    checkpoint_dir: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    dist: Group | None = None,
) -> SegModel:
    """Train ``model`` in place with ``method`` on ``dataset`` and return it (on the device, eval mode).

    dataset: yields (image float [3, H, W], mask long [H, W], 255 = ignore), all of one size.
    teacher: the frozen previous model, required when ``method.needs_teacher``; run in eval mode
        under ``torch.inference_mode``.
    class_map: name of every output channel 0..C-1, stored in the checkpoints.
    checkpoint_dir: where ``last.pt`` is written after every epoch; when it already holds one,
        training resumes from it (same config and data required) to the same result.
    on_checkpoint: called with the path of each epoch checkpoint once it is written.
    dist: this process's rank when the run is spread over several (``distributed.train_distributed``
        starts them): it trains on its share of each batch under DDP; rank 0 alone checkpoints and
        recalibrates BatchNorm.
    """
    class_map = check_class_map(class_map, model.num_classes)
    n_images = len(dataset)  # type: ignore[arg-type]
    if n_images == 0:
        raise ValueError("the training dataset is empty")
    batch_size = min(config.batch_size, n_images)
    if batch_size < config.batch_size:
        log.warning("only %d training images: batch size %d lowered to %d", n_images, config.batch_size, batch_size)
    steps = n_images // batch_size  # the last incomplete batch is dropped (BatchNorm needs > 1 sample)
    device = resolve_device(config.device) if dist is None else dist.device(resolve_device(config.device))
    rank_batch = batch_size if dist is None else dist.per_rank_batch(batch_size)
    amp_dtype = autocast_dtype(device, config.amp)
    memory_format = torch.channels_last if device.type == "cuda" and config.channels_last else torch.preserve_format

    model.requires_grad_(True)  # a previous method (e.g. a frozen encoder) must not leak into this one
    method.setup(model, teacher)
    model.to(device=device, memory_format=memory_format)
    if method.needs_teacher:
        assert teacher is not None  # method.setup checked it
        teacher.to(device=device, memory_format=memory_format).eval()
    else:
        teacher = None  # not needed: do not pay for its forward pass
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps=config.epochs * steps)
    scaler = build_scaler(device, amp_dtype)

    run_facts = {"arch": model.arch, "num_classes": model.num_classes, "class_map": class_map,
                 "method": method.name, "num_images": n_images, "steps_per_epoch": steps}
    # Under DDP this whole-set loader serves only the passes before and after training (the ranks
    # train on their own shards): its workers need not idle through the epochs.
    loader = _loader(dataset, batch_size, config, device, persistent=dist is None)
    if config.class_balance > 0:
        loader.sampler.set_epoch(config.epochs + 2)
        masks = (labels for _, labels in loader)
        weights = balance.class_weights(balance.pixel_frequencies(masks, model.num_classes), config.class_balance)
        log.info("class weights %s", [round(w, 2) for w in weights.tolist()])
        method.set_class_weights(weights.to(device))
    if teacher is not None and method.needs_calibration:
        # Its own pass of the loader (seeded by it), before the RNG is seeded (or restored) for
        # training: a resumed run computes the same calibration.
        _seed_everything(config.seed)
        loader.sampler.set_epoch(config.epochs + 1)
        batches = ((images, labels.to(device)) for images, labels in _images(loader, device, memory_format))
        method.calibrate(teacher, batches)
    start_epoch = _resume(checkpoint_dir, run_facts, config, model, optimizer, scheduler, scaler, dist)
    if start_epoch == 0:
        _seed_everything(config.seed if dist is None else dist.seed(config.seed))
    # With several ranks, each trains on its share of every global batch, through DDP.
    shards = loader if dist is None else _loader(dataset, rank_batch, config, device, rank=dist.rank,
                                                 world_size=dist.world_size)
    net = model if dist is None else dist.wrap(model, device)
    freeze_bn = config.batchnorm == "frozen" and method.num_old_classes > 0

    for epoch in range(start_epoch, config.epochs):
        shards.sampler.set_epoch(epoch)
        _train_mode(model, method, freeze_bn)
        reports = _Reporter(on_progress, epoch, config, steps, batch_size)
        for step, (images, labels) in enumerate(shards):
            if dist is None:
                stop = should_cancel is not None and should_cancel()
            else:  # rank 0's answer, shared every log_every steps, so that all ranks stop at one step
                stop = step % config.log_every == 0 and dist.any(should_cancel is not None and should_cancel(), device)
            if stop:
                saved = f"; {epoch} completed epoch(s) are checkpointed" if checkpoint_dir else ""
                raise TrainingCancelled(
                    f"training cancelled before epoch {epoch + 1}/{config.epochs}, step {step + 1}/{steps}{saved}"
                )
            _check_batch(images, labels, model.num_classes)
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            lr = optimizer.param_groups[0]["lr"]
            terms = train_step(net, method, teacher, images, labels, optimizer, scheduler, scaler, amp_dtype)
            if dist is not None and reports.due(step):  # what one process would report: the global batch's
                terms = dist.mean(terms, device)
            reports.after_step(step, terms, lr)
        # Checked once an epoch (a device sync), before the epoch is checkpointed: a resumed run
        # must not start from diverged weights. (An fp16 GradScaler skips non-finite steps itself.)
        _check_finite(terms, epoch, config)
        ranks_rng = dist.gather_rng() if dist is not None and checkpoint_dir is not None else None
        if checkpoint_dir is not None and (dist is None or dist.is_main):
            state = {**run_facts, "epoch": epoch + 1, "config": dataclasses.asdict(config),
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "rng": capture_rng_state(), **({"rng_ranks": ranks_rng} if ranks_rng else {})}
            saved = save_training_state(checkpoint_dir, state)
            if on_checkpoint is not None:
                on_checkpoint(saved)  # e.g. copy it off the machine, so any worker can resume
        log.info("epoch %d/%d done", epoch + 1, config.epochs)
    if dist is not None:
        dist.unwrap(model)
        if not dist.is_main:
            return model.eval()  # rank 0's model is the result
    if config.batchnorm != "update" and not freeze_bn:
        # Precise BN: the statistics of the trained weights (see services.learning.batchnorm).
        _train_mode(model, method, freeze_bn)
        loader.sampler.set_epoch(config.epochs)
        batchnorm.recalibrate(model, (images for images, _ in _images(loader, device, memory_format)), device=device)
    model.eval()
    return model


def train_step(
    model: SegModel,
    method: Method,
    teacher: SegModel | None,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
) -> dict[str, Tensor]:
    """One optimisation step on images [N, 3, H, W] and labels [N, H, W] (already on the device).

    Returns the method's loss terms, detached (reading them with .item() syncs the device).
    """
    with _autocast(images.device, amp_dtype):
        teacher_out = None
        if teacher is not None:
            with torch.inference_mode():
                frozen = teacher(images)
            # Inference tensors cannot be saved for backward (the losses need them): clone them
            # into ordinary tensors outside inference mode.
            teacher_out = SegOutput(frozen.logits.clone(), frozen.features.clone(),
                                    tuple(t.clone() for t in frozen.stages))
        out = model(images)
        terms = method.loss(out, teacher_out, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["loss"]).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    method.after_step(getattr(model, "module", model))  # the model itself, also under DDP
    return {k: v.detach() for k, v in terms.items()}


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 on CUDA when supported, fp16 on older CUDA GPUs, None (float32) otherwise."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_optimizer(model: SegModel, config: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay over the parameters that require gradients."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.PolynomialLR:
    """Poly decay per iteration: lr_t = lr * (1 - t / total_steps) ** lr_power."""
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_steps, power=config.lr_power)


def build_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 and float32 need no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)


# --- internals -----------------------------------------------------------------------------


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _resume(
    checkpoint_dir: Path | None,
    run_facts: dict[str, Any],
    config: TrainConfig,
    model: SegModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    dist: Group | None = None,
) -> int:
    """Load ``last.pt`` when there is one; returns the number of epochs already done."""
    state = load_training_state(checkpoint_dir) if checkpoint_dir is not None else None
    if state is None:
        return 0
    where = Path(checkpoint_dir) / "last.pt"  # type: ignore[arg-type]
    differ = [k for k, v in run_facts.items() if state.get(k) != v]
    differ += [f"config.{k}" for k in RESUME_FIELDS if state["config"].get(k) != getattr(config, k)]
    if differ:
        raise ValueError(
            f"cannot resume from {where}: it was written by a different run ({', '.join(differ)} differ); "
            "remove it to start over"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler.is_enabled() and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"] if dist is None else dist.rng_from(state))
    log.info("resuming from %s after epoch %d/%d", where, state["epoch"], config.epochs)
    return int(state["epoch"])


def _check_finite(terms: dict[str, Tensor], epoch: int, config: TrainConfig) -> None:
    if not bool(torch.isfinite(terms["loss"])):
        values = ", ".join(f"{k} {float(v):.4g}" for k, v in terms.items())
        raise TrainingDiverged(
            f"training diverged in epoch {epoch + 1}/{config.epochs}: the loss is no longer finite ({values}); "
            f"lower the learning rate (lr {config.lr:g}) or check the data"
        )


def _train_mode(model: SegModel, method: Method, freeze_bn: bool) -> None:
    """Training mode as the method and the BatchNorm policy want it."""
    model.train()
    method.train_mode(model)
    if freeze_bn:
        batchnorm.freeze_statistics(model)


def _images(loader: DataLoader, device: torch.device,
            memory_format: torch.memory_format) -> Iterator[tuple[Tensor, Tensor]]:
    """The (images, labels) batches of ``loader``, images on the device in the model's layout."""
    for images, labels in loader:
        yield images.to(device, non_blocking=True, memory_format=memory_format), labels


def _seed_everything(seed: int) -> None:
    """Seed the global RNGs that models and data transforms may draw from."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _loader(dataset: Dataset, batch_size: int, config: TrainConfig, device: torch.device, *,
            rank: int = 0, world_size: int = 1, persistent: bool = True) -> DataLoader:
    """The run's one loader: each pass (``loader.sampler.set_epoch``) is shuffled and augmented by
    draws of (seed, pass) alone (services.learning.sampling), whatever the number of workers.

    Workers decode and augment the next batches while the model trains on this one; they persist
    from pass to pass (no fork and refill at each epoch) unless ``config.persistent_workers`` is off
    or ``persistent`` is (a loader used for a pass or two only, e.g. beside a rank's own shards).
    Batches are pinned for an asynchronous copy when training on CUDA."""
    sampler = EpochSampler(len(dataset), batch_size, config.seed,  # type: ignore[arg-type]
                           rank=rank, world_size=world_size)  # a rank's share (services.learning.distributed)
    workers = config.num_workers
    return DataLoader(
        SeededItems(dataset), batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0 and config.persistent_workers and persistent,
    )


def _check_batch(images: Tensor, labels: Tensor, num_classes: int) -> None:
    """Clear errors for data that do not fit (checked on the CPU tensors: no device sync)."""
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be float [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    if labels.dim() != 3 or labels.dtype != torch.long or labels.shape[1:] != images.shape[2:]:
        raise ValueError(
            f"masks must be long [N, H, W] of the images' size {tuple(images.shape[2:])}, "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    bad = labels[(labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))]
    if bad.numel():
        raise ValueError(
            f"mask labels {sorted(set(bad.unique().tolist()))[:10]} are outside the model's classes "
            f"0..{num_classes - 1} (and {IGNORE_INDEX} = ignore)"
        )


class _Reporter:
    """Calls on_progress every ``log_every`` steps and at the epoch's last step."""

    def __init__(self, on_progress: Callable[[Progress], None] | None, epoch: int, config: TrainConfig,
                 steps: int, batch_size: int) -> None:
        self.on_progress, self.epoch, self.config = on_progress, epoch, config
        self.steps, self.batch_size = steps, batch_size
        self.since = time.perf_counter()
        self.images = 0

    def due(self, step: int) -> bool:
        """Whether ``step`` is reported (every ``log_every`` steps and the epoch's last)."""
        return not (step + 1) % self.config.log_every or step + 1 == self.steps

    def after_step(self, step: int, terms: dict[str, Tensor], lr: float) -> None:
        self.images += self.batch_size
        if self.on_progress is None or not self.due(step):
            return
        values = {k: float(v) for k, v in terms.items()}  # syncs the device, only when reporting
        now = time.perf_counter()
        self.on_progress(Progress(
            epoch=self.epoch + 1, epochs=self.config.epochs, step=step + 1, steps=self.steps,
            loss=values.pop("loss"), lr=lr,
            images_per_s=self.images / max(now - self.since, 1e-9), terms=values,
        ))
        self.since, self.images = time.perf_counter(), 0
