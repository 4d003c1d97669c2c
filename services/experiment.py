"""The experiment runner: one incremental scenario, one method, every step trained and scored.

Step 0 trains a model on S_0 (from scratch or a pretrained backbone); step k grows the previous
model's classifier and trains it with the method's losses, the previous model frozen as teacher.
After each step the model is scored on the validation split under that step's evaluation labels
(unseen classes void). ``joint`` is the upper bound: at each step a fresh model trained on the
union of all steps' images so far with every seen class labelled.

The step-0 model depends only on the data, the first step and the training settings, not on the
method, so it is cached on disk under a key of that full configuration: comparing methods on
one scenario trains the base once.

Scores are computed at the evaluation size (images resized by ``eval_preprocess``, masks by
NEAREST), not at each image's original resolution, so that validation batches have one shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from services.data.datasets import SegmentationSource, open_source
from services.data.presence import class_presence
from services.data.protocols import OLD_LABELS, PROTOCOLS, Step, build_steps, joint_step
from services.data.step_dataset import SegmentationDataset
from services.data.transforms import EvalTransform, TrainTransform
from services.evaluation.evaluate import EvalResult, evaluate
from services.errors import InvalidInput
from services.evaluation.metrics import forgetting
from services.learning.checkpoint import load_model, save_model
from services.learning.growth import grow_classifier
from services.learning.methods import METHODS, Method, build_method
from services.learning.trainer import Progress, TrainConfig, resolve_device, train
from services.learning.zoo import ARCHITECTURES, SegModel, build_model

BASE_CACHE_VERSION = 1


class ExperimentError(InvalidInput):
    """An experiment setting is invalid; the message names it."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines an experiment run.

    ``base_epochs`` / ``base_lr`` (default: ``epochs`` / ``lr``) apply to every training from
    scratch: step 0 and each joint step. Incremental steps usually want a smaller learning rate.
    """

    data: Path
    scenario: str
    method: str
    protocol: str = "overlapped"
    old_labels: str = "drop"
    model: str = "lraspp_mobilenet_v3_large"
    image_size: int = 256
    epochs: int = 30
    base_epochs: int | None = None
    batch_size: int = 8
    lr: float = 0.01
    base_lr: float | None = None
    seed: int = 0
    pretrained: bool = True
    backbone_weights: Path | None = None
    limit_images: int | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    num_workers: int = 0
    train_split: str = "train"
    val_split: str = "val"
    scale: tuple[float, float] = (0.5, 2.0)
    method_weights: dict[str, float | str] = field(default_factory=dict)  # lambda_d/_e/_u, ld_form

    def __post_init__(self) -> None:
        checks = [
            ("method", self.method in METHODS, f"one of {', '.join(METHODS)}"),
            ("protocol", self.protocol in PROTOCOLS, f"one of {', '.join(PROTOCOLS)}"),
            ("old_labels", self.old_labels in OLD_LABELS, f"one of {', '.join(OLD_LABELS)}"),
            ("model", self.model in ARCHITECTURES, f"one of {', '.join(ARCHITECTURES)}"),
            ("image_size", _int_at_least(self.image_size, 8), "an int >= 8"),
            ("epochs", _int_at_least(self.epochs, 1), "an int >= 1"),
            ("base_epochs", self.base_epochs is None or _int_at_least(self.base_epochs, 1), "an int >= 1"),
            ("batch_size", _int_at_least(self.batch_size, 1), "an int >= 1"),
            ("lr", _positive(self.lr), "a finite number > 0"),
            ("base_lr", self.base_lr is None or _positive(self.base_lr), "a finite number > 0"),
            ("limit_images", self.limit_images is None or _int_at_least(self.limit_images, 1), "an int >= 1"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ExperimentError(f"{name} must be {what}, got {getattr(self, name)!r}")
        if self.backbone_weights is not None and not Path(self.backbone_weights).is_file():
            raise ExperimentError(f"backbone weights file {self.backbone_weights} does not exist")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ExperimentError(f"scale must be (low, high) with 0 < low <= high, got {self.scale!r}")
        try:  # fail now, not after training step 0, on a loss weight the method does not use
            build_method(self.method, 1, **self.method_weights)
        except (TypeError, ValueError) as err:
            raise ExperimentError(str(err)) from None

    @property
    def first_epochs(self) -> int:
        """Epochs of every from-scratch training: step 0, and each joint step."""
        return self.base_epochs or self.epochs

    @property
    def first_lr(self) -> float:
        """Learning rate of every from-scratch training."""
        return self.base_lr or self.lr


Log = Callable[[str], None]


def _write(message: str) -> None:
    """Print a line without breaking the progress bars."""
    tqdm.write(message)


@dataclass
class TrainSummary:
    """How one training run went: the loss terms (and their total, "loss") at its first and
    last progress report, and its wall time. A cached base has no losses."""

    images: int
    first: dict[str, float] | None = None
    last: dict[str, float] | None = None
    seconds: float = 0.0
    cached: bool = False

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_experiment(config: ExperimentConfig, *, log: Log = _write, progress: bool = True) -> dict[str, Any]:
    """Run every step of ``config.scenario``; returns the JSON-ready result (see ``result_record``)."""
    train_src, val_src = load_sources(config)
    cache = Path(config.cache_dir) if config.cache_dir is not None else None
    presence = class_presence(train_src, cache, progress=progress)
    steps = build_steps(train_src, config.scenario, config.protocol, config.old_labels, presence=presence)
    names = train_src.class_names
    log(f"{config.scenario} {config.protocol} ({config.old_labels} old labels), method {config.method}, "
        f"{config.model} at {config.image_size}px: {len(steps)} steps, "
        f"{len(train_src)} training / {len(val_src)} validation images")
    records: list[dict[str, Any]] = []
    model: SegModel | None = None
    for step in steps:
        model, summary = run_step(config, train_src, steps, step.index, model, progress=progress, log=log)
        scored = score_step(config, model, val_src, step, progress=progress)
        records.append(step_record(step, scored, names, [r["iou"] for r in records], summary))
        log(_step_line(records[-1]))
    result = result_record(config, records)
    log(format_table(result))
    return result


def load_sources(config: ExperimentConfig) -> tuple[SegmentationSource, SegmentationSource]:
    """The training and validation splits, each cut to ``limit_images`` (a seeded sample)."""
    train_src = open_source(config.data, config.train_split)
    val_src = open_source(config.data, config.val_split)
    if train_src.class_names != val_src.class_names:
        raise ExperimentError(f"splits {config.train_split} and {config.val_split} name different classes")
    if config.limit_images is not None:
        train_src, val_src = (_sample(s, config.limit_images, config.seed) for s in (train_src, val_src))
    return train_src, val_src


def run_step(
    config: ExperimentConfig,
    train_src: SegmentationSource,
    steps: list[Step],
    k: int,
    previous: SegModel | None,
    *,
    progress: bool = True,
    log: Log = _write,
) -> tuple[SegModel, TrainSummary]:
    """The model after step ``k``: the (cached) base at step 0, else grown and trained from ``previous``."""
    step = steps[k]
    if k == 0:
        return base_model(config, train_src, step, progress=progress, log=log)
    class_map = {c: train_src.class_names[c] for c in step.classes}
    data = _step_data(config, steps, k)
    dataset = _train_dataset(config, train_src, data)
    if config.method == "joint":
        model = _fresh_model(config, step.num_classes)
        method = build_method("joint", 0)
        return _train(model, method, dataset, _train_config(config, config.first_epochs, config.first_lr),
                      class_map, None, f"step {k} joint", progress)
    if previous is None:
        raise ExperimentError(f"step {k} needs the model of step {k - 1}")
    method = build_method(config.method, len(step.old_classes), **config.method_weights)
    rows = torch.Generator().manual_seed(config.seed * 1000 + k)  # the new classifier rows, seeded
    model = grow_classifier(
        previous, len(step.new_classes), init=method.classifier_init, generator=rows  # type: ignore[arg-type]
    )
    return _train(model, method, dataset, _train_config(config, config.epochs, config.lr),
                  class_map, previous, f"step {k} {config.method}", progress)


def base_model(
    config: ExperimentConfig, train_src: SegmentationSource, step: Step, *, progress: bool = True, log: Log = _write
) -> tuple[SegModel, TrainSummary]:
    """The step-0 model, read from the cache when an identical configuration trained it before."""
    key, facts = base_cache_key(config, train_src, step)
    path = Path(config.cache_dir) / "experiments" / f"base-{key}.pt" if config.cache_dir is not None else None
    if path is not None and path.is_file():
        log(f"step 0: cached base model {path}")
        return load_model(path).model, TrainSummary(len(step.train_indices), cached=True)
    class_map = {c: train_src.class_names[c] for c in step.classes}
    dataset = _train_dataset(config, train_src, step)
    model = _fresh_model(config, step.num_classes)
    tc = _train_config(config, config.first_epochs, config.first_lr)
    model, summary = _train(model, build_method("ft", 0), dataset, tc, class_map, None, "step 0", progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(path, model, class_map, meta={"base_cache": facts})
    return model, summary


def base_cache_key(config: ExperimentConfig, train_src: SegmentationSource, step: Step) -> tuple[str, dict[str, Any]]:
    """A digest of everything the step-0 model depends on, and those facts themselves."""
    items = hashlib.sha256()
    for i in step.train_indices:
        for p in train_src.items[i]:
            st = p.stat()
            items.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    weights = None
    if config.backbone_weights is not None:
        st = Path(config.backbone_weights).stat()
        weights = f"{Path(config.backbone_weights).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    facts = {
        "version": BASE_CACHE_VERSION,
        "data": str(Path(config.data).resolve()),
        "split": config.train_split,
        "items": items.hexdigest(),
        "train_lut": step.train_lut.tolist(),
        "classes": list(step.classes),
        "model": config.model,
        "image_size": config.image_size,
        "scale": list(config.scale),
        "pretrained": config.pretrained,
        "backbone_weights": weights,
        "train_config": _result_fields(_train_config(config, config.first_epochs, config.first_lr)),
    }
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]
    return key, facts


def score_step(
    config: ExperimentConfig, model: SegModel, val_src: SegmentationSource, step: Step, *, progress: bool = True
) -> EvalResult:
    """The model on the whole validation split, unseen classes void, seen classes scored."""
    dataset = SegmentationDataset(val_src, None, step.eval_lut, EvalTransform(config.image_size))
    return evaluate(
        model, dataset, step.num_classes, resolve_device(config.device),
        old_classes=step.old_classes, new_classes=step.new_classes,
        batch_size=config.batch_size, num_workers=config.num_workers, progress=progress,
    )


def step_record(
    step: Step,
    scored: EvalResult,
    names: tuple[str, ...],
    earlier: list[dict[str, float | None]],
    summary: TrainSummary,
) -> dict[str, Any]:
    """One step of the result JSON; IoU values in [0, 1], null where undefined."""
    iou = {names[c]: scored.iou[c] for c in step.classes}
    return {
        "step": step.index,
        "classes": [names[c] for c in step.classes],
        "new_classes": [names[c] for c in step.new_classes],
        "train_images": summary.images,
        "training": summary.as_json(),
        "miou_old": scored.miou_old,
        "miou_new": scored.miou_new,
        "miou_all": scored.miou_all,
        "pixel_accuracy": scored.pixel_accuracy,
        "iou": iou,
        "forgetting": forgetting([*earlier, iou]),
    }


def result_record(config: ExperimentConfig, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole result JSON: what was run, then the steps."""
    return {
        "scenario": config.scenario,
        "protocol": config.protocol,
        "old_labels": config.old_labels,
        "method": config.method,
        "model": config.model,
        "data": str(config.data),
        "image_size": config.image_size,
        "epochs": config.epochs,
        "base_epochs": config.first_epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "base_lr": config.first_lr,
        "seed": config.seed,
        "pretrained": config.pretrained or config.backbone_weights is not None,
        "method_weights": dict(config.method_weights),  # loss weights and ld_form given (else defaults)
        "steps": steps,
    }


def write_result(result: dict[str, Any], path: Path) -> None:
    """Write the result JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)


def format_table(result: dict[str, Any]) -> str:
    """A paper-style table: mIoU % old/new/all per step, then per-class IoU % per step."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"{result['method']} on {result['scenario']} ({result['protocol']}), mIoU %:",
             f"{'step':>4}  {'old':>6} {'new':>6} {'all':>6}  new classes"]
    for s in result["steps"]:
        scores = " ".join(f"{pct(s[k]):>6}" for k in ("miou_old", "miou_new", "miou_all"))
        lines.append(f"{s['step']:>4}  {scores}  {', '.join(s['new_classes'])}")
    names = result["steps"][-1]["classes"] if result["steps"] else []
    width = max([6, *(len(n) for n in names)])
    lines.append("per-class IoU %:")
    lines.append(f"{'step':>4}  " + " ".join(f"{n:>{width}}" for n in names))
    for s in result["steps"]:
        cells = (pct(s["iou"][n]) if n in s["iou"] else "" for n in names)  # blank: not yet seen
        lines.append(f"{s['step']:>4}  " + " ".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


# --- internals -----------------------------------------------------------------------------
def _train_dataset(config: ExperimentConfig, source: SegmentationSource, step: Step) -> SegmentationDataset:
    """The step's training images under its training labels, augmented."""
    transform = TrainTransform(config.image_size, config.scale)
    return SegmentationDataset(source, step.train_indices, step.train_lut, transform)


def _step_data(config: ExperimentConfig, steps: list[Step], k: int) -> Step:
    return joint_step(steps, k) if config.method == "joint" else steps[k]


def _fresh_model(config: ExperimentConfig, num_classes: int) -> SegModel:
    torch.manual_seed(config.seed)  # the random initialisation is part of the seeded run
    return build_model(
        config.model, num_classes,
        pretrained_backbone=config.pretrained and config.backbone_weights is None,
        backbone_weights=config.backbone_weights,
    )


def _train_config(config: ExperimentConfig, epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=config.batch_size, lr=lr, seed=config.seed,
                       device=config.device, num_workers=config.num_workers)


def _train(
    model: SegModel, method: Method, dataset: SegmentationDataset, tc: TrainConfig,
    class_map: dict[int, str], teacher: SegModel | None, desc: str, progress: bool,
) -> tuple[SegModel, TrainSummary]:
    """Train with a tqdm bar over all iterations of the run; summarise the losses."""
    batch = min(tc.batch_size, len(dataset))
    total = tc.epochs * (len(dataset) // batch)
    summary = TrainSummary(len(dataset))
    started = time.perf_counter()
    with tqdm(total=total, desc=desc, disable=not progress, unit="it", leave=False) as bar:
        def report(p: Progress) -> None:
            summary.last = {"loss": p.loss, **p.terms}
            if summary.first is None:
                summary.first = summary.last
            bar.n = (p.epoch - 1) * p.steps + p.step
            bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}", refresh=False)
            bar.refresh()
        model = train(model, method, dataset, tc, teacher=teacher,
                      class_map=class_map, on_progress=report)
    summary.seconds = round(time.perf_counter() - started, 2)
    return model, summary


def _sample(source: SegmentationSource, limit: int, seed: int) -> SegmentationSource:
    if limit >= len(source):
        return source
    return source.subset(sorted(random.Random(seed).sample(range(len(source)), limit)))


def _result_fields(tc: TrainConfig) -> dict[str, Any]:
    """The TrainConfig fields that change the trained weights (not device, workers, logging)."""
    skip = {"device", "num_workers", "log_every", "channels_last"}
    return {k: v for k, v in dataclasses.asdict(tc).items() if k not in skip}


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


def _int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _step_line(record: dict[str, Any]) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    t = record["training"]
    how = "cached" if t["cached"] else f"{t['seconds']:.0f}s, loss {t['first']['loss']:.3f} -> {t['last']['loss']:.3f}"
    return (f"step {record['step']} (+{', '.join(record['new_classes'])}; {record['train_images']} images, {how}): "
            f"mIoU old {pct(record['miou_old'])} new {pct(record['miou_new'])} all {pct(record['miou_all'])}")

