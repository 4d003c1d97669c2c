"""What defines a training run, as plain data: the one home of the engine's defaults.

Torch-free, so the task spec (``services.jobs.spec``) and the CLI parsers take their defaults
from here without importing torch. ``TrainConfig``'s defaults are the ILT/MiB DeepLab recipe;
``StepConfig`` adds what one incremental step needs beyond the optimiser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.learning.names import DEFAULT_ARCHITECTURE

# Loss weights (the ILT authors' code: lambda_D 1 with L'_D in the paper's form, lambda_E 50;
# MiB's published lambda_U 10 with its class-averaged unbiased KD) and the forms of L'_D.
DEFAULT_LAMBDA_D = 1.0
DEFAULT_LAMBDA_E = 50.0
DEFAULT_LAMBDA_U = 10.0
DEFAULT_LAMBDA_POD = 0.01  # PLOP's pod_factor for its Local POD
WEIGHT_NAMES: tuple[str, ...] = ("lambda_d", "lambda_e", "lambda_u", "lambda_pod")
DEFAULT_LD_FORM = "paper"
LD_FORMS: tuple[str, ...] = (DEFAULT_LD_FORM, "mib")

# Config fields a resumed run must share with the run that wrote the checkpoint: they change the
# result. The others (device, workers, layout, logging) only change how fast it comes.
RESUME_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_power", "seed", "amp", "batchnorm",
                 "class_balance")

# How BatchNorm's running statistics are handled (services.learning.batchnorm says why).
BATCHNORM_POLICIES: tuple[str, ...] = ("recalibrate", "update", "frozen")
DEFAULT_BATCHNORM = "recalibrate"

# Class weights of the classification losses (services.learning.balance): the power of the
# median-frequency weights. 0 = unweighted, 0.5 = square root, 1 = SegNet's balancing. 0.5 by
# measurement (docs/results.md, CamVid trained on all classes): +4.4 mIoU over unweighted, and
# SignSymbol, Pedestrian and Bicyclist learnt at all; full balancing costs Building and Tree more
# than it gives the thin classes.
DEFAULT_CLASS_BALANCE = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the ILT/MiB DeepLab recipe)."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_power: float = 0.9  # poly decay per iteration: lr * (1 - it / total) ** lr_power
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    amp: bool = True  # CUDA only: bf16 autocast when supported, else fp16 + GradScaler
    batchnorm: str = DEFAULT_BATCHNORM  # one of BATCHNORM_POLICIES
    class_balance: float = DEFAULT_CLASS_BALANCE  # power of the median-frequency class weights, 0..1
    channels_last: bool = True  # CUDA only
    num_workers: int = 0  # loader processes decoding and augmenting ahead of the step (0: in the training process)
    persistent_workers: bool = True  # keep them from epoch to epoch (with num_workers > 0)
    log_every: int = 10  # steps between on_progress calls (the last step of an epoch always reports)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every"):
            _require(name, getattr(self, name), lambda v: isinstance(v, int) and v >= 1, "an int >= 1")
        _require("num_workers", self.num_workers, lambda v: isinstance(v, int) and v >= 0, "an int >= 0")
        _require("seed", self.seed, lambda v: isinstance(v, int) and v >= 0, "an int >= 0")
        _require("lr", self.lr, lambda v: v > 0 and math.isfinite(v), "a finite number > 0")
        _require("class_balance", self.class_balance, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        for name in ("momentum", "weight_decay", "lr_power"):
            _require(name, getattr(self, name), lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0")
        if self.batchnorm not in BATCHNORM_POLICIES:
            raise ValueError(f"TrainConfig.batchnorm must be one of {', '.join(BATCHNORM_POLICIES)}, "
                             f"got {self.batchnorm!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"TrainConfig.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class StepConfig:
    """One incremental step: the method, the training run, and the network a first step builds.

    method: a ``METHODS`` name. With no previous model there is nothing to distil from, and the
        step trains with plain cross-entropy whatever the method (as in both papers).
    loss_weights: lambda_d / lambda_e / lambda_u / ld_form given; absent = the method's default.
    architecture, pretrained_backbone, backbone_weights: how a step with no previous model builds
        its network (a grown model keeps its parent's).
    step_index: the step's place in its lineage (0 for a new model); it seeds the new classifier
        rows, so that every step of a seeded sequence draws different ones.

    Seeding, the one rule for the worker and the experiments alike: a new network is initialised
    after ``torch.manual_seed(train.seed)``; the classifier rows a step adds are drawn from a
    generator seeded with ``train.seed * 1000 + step_index``; training seeds every RNG with
    ``train.seed`` (``trainer.train``).
    """

    method: str
    train: TrainConfig = field(default_factory=TrainConfig)
    loss_weights: Mapping[str, float | str] = field(default_factory=dict)
    architecture: str = DEFAULT_ARCHITECTURE
    pretrained_backbone: bool = True
    backbone_weights: Path | None = None
    backbone_weights_dir: Path | None = None  # where ImageNet weight files are looked for first (offline)
    step_index: int = 0

    @property
    def growth_seed(self) -> int:
        """The seed of the generator that draws the new classifier rows."""
        return self.train.seed * 1000 + self.step_index


def _require(name: str, value: Any, ok: Callable[[Any], bool], what: str) -> None:
    try:
        good = not isinstance(value, bool) and ok(value)
    except TypeError:
        good = False
    if not good:
        raise ValueError(f"TrainConfig.{name} must be {what}, got {value!r}")
