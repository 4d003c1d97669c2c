"""Timing training steps on random data, for ``strata bench train`` and ``bench/bench_train.py``.

A benchmark builds a teacher with ``num_old`` classes and a student grown from it by ``num_new``
(the shape of an incremental step), one fixed random batch, and times steps after a warm-up.
On CUDA every timed step ends with a synchronisation, so a step's time is its real duration.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from services.labels import IGNORE_INDEX
from services.learning.config import TrainConfig
from services.learning.growth import grow_classifier
from services.learning.methods import build_method
from services.learning.trainer import (
    autocast_dtype,
    build_optimizer,
    build_scaler,
    build_scheduler,
    resolve_device,
    train_step,
)
from services.learning.zoo import SegModel, build_model

StepFn = Callable[[], None]


@dataclass(frozen=True)
class BenchSetup:
    """One fixed batch and the models of an incremental step, all on ``device``."""

    device: torch.device
    amp_dtype: torch.dtype | None
    teacher: SegModel  # num_old classes, eval mode
    student: SegModel  # num_old + num_new classes (grown from the teacher)
    images: Tensor  # [N, 3, S, S]
    labels: Tensor  # [N, S, S], classes 0..num_old+num_new-1 and some 255
    config: TrainConfig


def make_setup(
    arch: str, *, image_size: int, batch_size: int, device: str = "auto", num_old: int = 16, num_new: int = 5,
    amp: bool = True, channels_last: bool = True, seed: int = 0,
) -> BenchSetup:
    if image_size < 32 or batch_size < 1:
        raise ValueError(f"need image_size >= 32 and batch_size >= 1, got {image_size} and {batch_size}")
    torch.manual_seed(seed)
    dev = resolve_device(device)
    config = TrainConfig(epochs=1, batch_size=batch_size, device=device, amp=amp, channels_last=channels_last)
    fmt = torch.channels_last if dev.type == "cuda" and channels_last else torch.preserve_format
    teacher = build_model(arch, num_old).to(device=dev, memory_format=fmt).eval()
    student = grow_classifier(teacher, num_new).to(device=dev, memory_format=fmt)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
    labels = torch.randint(0, num_old + num_new, (batch_size, image_size, image_size), generator=gen)
    labels[:, :2] = IGNORE_INDEX  # a void border, as real masks have
    return BenchSetup(dev, autocast_dtype(dev, amp), teacher, student,
                      images.to(dev, memory_format=fmt), labels.to(dev), config)


def method_step(setup: BenchSetup, method_name: str) -> StepFn:
    """One step of our trainer (``train_step``) with ``method_name`` on a fresh copy of the student."""
    model = copy.deepcopy(setup.student).train()
    method = build_method(method_name, setup.teacher.num_classes)
    teacher = setup.teacher if method.needs_teacher else None
    method.setup(model, teacher)
    if teacher is not None and method.needs_calibration:  # e.g. plop's thresholds: one pass, untimed
        method.calibrate(teacher, [(setup.images, setup.labels)])
    method.train_mode(model)
    optimizer = build_optimizer(model, setup.config)
    scheduler = build_scheduler(optimizer, setup.config, total_steps=10**9)
    scaler = build_scaler(setup.device, setup.amp_dtype)

    def step() -> None:
        train_step(model, method, teacher, setup.images, setup.labels, optimizer, scheduler, scaler, setup.amp_dtype)

    return step


def bare_step(setup: BenchSetup) -> StepFn:
    """The same model, loss (CE) and optimizer in the plainest PyTorch loop, as a baseline."""
    model = copy.deepcopy(setup.student).train()
    cfg = setup.config
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    use_amp = setup.amp_dtype is not None

    def step() -> None:
        with torch.autocast(setup.device.type, dtype=setup.amp_dtype, enabled=use_amp):
            loss = F.cross_entropy(model(setup.images).logits.float(), setup.labels, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_steps(step: StepFn, *, steps: int, warmup: int, device: torch.device) -> list[float]:
    """Milliseconds of each of ``steps`` calls of ``step``, after ``warmup`` untimed ones."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return times


def summarize(times_ms: list[float], batch_size: int) -> dict[str, float]:
    median = statistics.median(times_ms)
    return {
        "step_ms_median": round(median, 3),
        "step_ms_min": round(min(times_ms), 3),
        "step_ms_max": round(max(times_ms), 3),
        "images_per_s": round(batch_size / (median / 1000), 3),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
