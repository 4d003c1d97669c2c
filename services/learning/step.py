"""One incremental step, the one way both the worker and ``strata experiment`` run it.

``run_step``: the model is the parent grown by the step's new classes (or, with no parent, a new
network), trained with the method's losses against the frozen parent, then scored on every
evaluation set. The seeding rule is ``StepConfig``'s; the caller brings the data (datasets with
their own lookup tables and transforms) and decides what the scores mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from services.evaluation.evaluate import EVAL_BATCH_SIZE, EvalResult, evaluate
from services.learning.config import StepConfig
from services.learning.distributed import train_distributed
from services.learning.growth import grow_classifier
from services.learning.methods import Method, build_method
from services.learning.names import BASE_METHOD
from services.learning.trainer import Progress, resolve_device
from services.learning.zoo import SegModel, build_model


@dataclass(frozen=True)
class EvalSet:
    """Labelled images to score the trained model on (masks already in its channels, 255 ignored),
    and the channels whose mean IoU is reported as old and new."""

    dataset: Dataset
    old_classes: Sequence[int] = ()
    new_classes: Sequence[int] = ()
    batch_size: int = EVAL_BATCH_SIZE


@dataclass(frozen=True)
class StepHooks:
    """How the caller follows and steers the training (see ``trainer.train``)."""

    checkpoint_dir: Path | None = None  # resumable epoch checkpoints; resumed from when one is there
    on_progress: Callable[[Progress], None] | None = None
    should_cancel: Callable[[], bool] | None = None
    on_checkpoint: Callable[[Path], None] | None = None
    progress_bars: bool = False  # a bar while scoring (training reports through on_progress)


@dataclass(frozen=True)
class StepResult:
    model: SegModel  # trained, in eval mode, on the training device
    method: str  # the method it trained with: BASE_METHOD for a new network
    scores: list[EvalResult]  # one per evaluation set, in order
    seconds: dict[str, float] = field(default_factory=dict)  # "train" and "score": wall time of each


def run_step(
    config: StepConfig,
    previous: SegModel | None,
    class_map: Mapping[int, str],
    train_set: Dataset,
    eval_sets: Sequence[EvalSet] = (),
    hooks: StepHooks = StepHooks(),
    *,
    processes: int = 1,
) -> StepResult:
    """Train the step's model and score it.

    previous: the parent model (frozen, it is the teacher), None for a new network.
    class_map: the name of every output channel of the new model, old channels first.
    train_set: (image float [3, H, W], mask long [H, W] of channels, 255 = ignore) pairs.
    processes: how many processes (GPUs) train it together (services.learning.distributed); this
        one is rank 0 and keeps the hooks.
    """
    began = time.perf_counter()
    model, teacher, method = prepare_step(config, previous, len(class_map))
    trained = train_distributed(
        processes, model, method, train_set, config.train, teacher=teacher, class_map=class_map,
        checkpoint_dir=hooks.checkpoint_dir, on_progress=hooks.on_progress,
        should_cancel=hooks.should_cancel, on_checkpoint=hooks.on_checkpoint,
    )
    trained_at = time.perf_counter()
    scores = score_model(trained, eval_sets, config, progress=hooks.progress_bars)
    seconds = {"train": trained_at - began, "score": time.perf_counter() - trained_at}
    return StepResult(trained, method.name, scores, seconds)


def prepare_step(config: StepConfig, previous: SegModel | None,
                 num_classes: int) -> tuple[SegModel, SegModel | None, Method]:
    """(model to train, frozen teacher or None, method): a new network seeded by ``train.seed``,
    or the parent's copy with ``num_classes - previous.num_classes`` classifier rows added."""
    if previous is None:
        torch.manual_seed(config.train.seed)  # the random initialisation is part of the seeded run
        model = build_model(config.architecture, num_classes, pretrained_backbone=config.pretrained_backbone,
                            backbone_weights=config.backbone_weights, weights_dir=config.backbone_weights_dir)
        return model, None, build_method(BASE_METHOD, 0)  # nothing to distil from: plain L_CE
    method = build_method(config.method, previous.num_classes, **config.loss_weights)
    previous.requires_grad_(False)
    rows = torch.Generator().manual_seed(config.growth_seed)
    model = grow_classifier(previous, num_classes - previous.num_classes, init=method.classifier_init,  # type: ignore[arg-type]
                            generator=rows)
    return model, previous, method


def score_model(model: SegModel, eval_sets: Sequence[EvalSet], config: StepConfig, *,
                progress: bool = False) -> list[EvalResult]:
    """The model scored on each set, on the training device."""
    device = resolve_device(config.train.device)
    return [evaluate(model, s.dataset, model.num_classes, device, old_classes=s.old_classes,
                     new_classes=s.new_classes, batch_size=s.batch_size, num_workers=config.train.num_workers,
                     progress=progress)
            for s in eval_sets]
