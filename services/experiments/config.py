"""What defines an experiment run, checked when it is built: ``ExperimentConfig``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.data.protocols import OLD_LABELS, PROTOCOLS
from services.errors import InvalidInput
from services.learning.config import BATCHNORM_POLICIES, StepConfig, TrainConfig
from services.learning.names import ARCHITECTURES, METHODS, SMALL_ARCHITECTURE

EXPERIMENT_IMAGE_SIZE = 256  # smaller than the service's crop: experiments run on CPUs too


class ExperimentError(InvalidInput):
    """An experiment setting is invalid; the message names it."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines an experiment run.

    ``base_epochs`` / ``base_lr`` (default: ``epochs`` / ``lr``) apply to every training from
    scratch: step 0 and each joint step. Incremental steps usually want a smaller learning rate.
    Training defaults are the engine's (``TrainConfig``).
    """

    data: Path
    scenario: str
    method: str
    protocol: str = "overlapped"
    old_labels: str = "drop"
    model: str = SMALL_ARCHITECTURE
    image_size: int = EXPERIMENT_IMAGE_SIZE
    crop_size: int | None = None  # square training crops; default image_size
    epochs: int = TrainConfig.epochs
    base_epochs: int | None = None
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    base_lr: float | None = None
    seed: int = TrainConfig.seed
    pretrained: bool = True
    backbone_weights: Path | None = None
    limit_images: int | None = None
    cache_dir: Path | None = None
    device: str = TrainConfig.device
    num_workers: int = TrainConfig.num_workers
    train_split: str = "train"
    val_split: str = "val"
    method_weights: dict[str, float | str] = field(default_factory=dict)  # lambda_d/_e/_u/_pod, ld_form
    batchnorm: str = TrainConfig.batchnorm
    class_balance: float = TrainConfig.class_balance

    def __post_init__(self) -> None:
        checks = [
            ("method", self.method in METHODS, f"one of {', '.join(METHODS)}"),
            ("protocol", self.protocol in PROTOCOLS, f"one of {', '.join(PROTOCOLS)}"),
            ("old_labels", self.old_labels in OLD_LABELS, f"one of {', '.join(OLD_LABELS)}"),
            ("model", self.model in ARCHITECTURES, f"one of {', '.join(ARCHITECTURES)}"),
            ("image_size", _int_at_least(self.image_size, 8), "an int >= 8"),
            ("crop_size", self.crop_size is None or _int_at_least(self.crop_size, 8), "an int >= 8"),
            ("epochs", _int_at_least(self.epochs, 1), "an int >= 1"),
            ("base_epochs", self.base_epochs is None or _int_at_least(self.base_epochs, 1), "an int >= 1"),
            ("batch_size", _int_at_least(self.batch_size, 1), "an int >= 1"),
            ("lr", _positive(self.lr), "a finite number > 0"),
            ("base_lr", self.base_lr is None or _positive(self.base_lr), "a finite number > 0"),
            ("limit_images", self.limit_images is None or _int_at_least(self.limit_images, 1), "an int >= 1"),
            ("batchnorm", self.batchnorm in BATCHNORM_POLICIES, f"one of {', '.join(BATCHNORM_POLICIES)}"),
            ("class_balance", _number_in(self.class_balance, 0, 1), "a number in [0, 1]"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ExperimentError(f"{name} must be {what}, got {getattr(self, name)!r}")
        if self.backbone_weights is not None and not Path(self.backbone_weights).is_file():
            raise ExperimentError(f"backbone weights file {self.backbone_weights} does not exist")
        from services.learning.methods import build_method  # torch: only once a run is configured

        try:  # fail now, not after training step 0, on a loss weight the method does not use
            build_method(self.method, 1, **self.method_weights)
        except (TypeError, ValueError) as err:
            raise ExperimentError(str(err)) from None

    @property
    def train_crop(self) -> int:
        """The side of the square training crops."""
        return self.crop_size or self.image_size

    @property
    def first_epochs(self) -> int:
        """Epochs of every from-scratch training: step 0, and each joint step."""
        return self.base_epochs or self.epochs

    @property
    def first_lr(self) -> float:
        """Learning rate of every from-scratch training."""
        return self.base_lr or self.lr

    def train_config(self, *, from_scratch: bool) -> TrainConfig:
        """The training run of a step: from scratch (step 0, joint) or incremental."""
        epochs, lr = (self.first_epochs, self.first_lr) if from_scratch else (self.epochs, self.lr)
        # "frozen" keeps a parent's statistics: a model trained from scratch has none and
        # recalibrates (as the trainer does), so it is the same model, cached under the same key.
        batchnorm = "recalibrate" if from_scratch and self.batchnorm == "frozen" else self.batchnorm
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=lr, seed=self.seed, device=self.device,
                           num_workers=self.num_workers, batchnorm=batchnorm, class_balance=self.class_balance)

    def step_config(self, step_index: int) -> StepConfig:
        """How step ``step_index`` trains (joint: a new network on the union, every time)."""
        from_scratch = step_index == 0 or self.method == "joint"
        return StepConfig(
            method=self.method, train=self.train_config(from_scratch=from_scratch),
            loss_weights=dict(self.method_weights), architecture=self.model,
            pretrained_backbone=self.pretrained and self.backbone_weights is None,
            backbone_weights=self.backbone_weights, step_index=step_index,
        )


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


def _number_in(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
