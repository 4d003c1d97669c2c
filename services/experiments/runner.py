"""The experiment runner: one incremental scenario, one method, every step trained and scored.

Step 0 trains a model on S_0 (from scratch or a pretrained backbone); step k grows the previous
model's classifier and trains it with the method's losses, the previous model frozen as teacher.
Each step is one ``learning.step.run_step``, exactly as the service's worker runs a task. After
each step the model is scored on the validation split under that step's evaluation labels
(unseen classes void). ``joint`` is the upper bound: at each step a fresh model trained on the
union of all steps' images so far with every seen class labelled.

The step-0 model depends only on the data, the first step and the training settings, not on the
method, so it is cached on disk under a key of that full configuration: comparing methods on
one scenario trains the base once.

Scores are computed at each label's own resolution: the whole image, its shorter side resized to
``image_size`` by ``eval_preprocess`` (aspect ratio kept), is predicted and its logits upsampled
to the mask's size before the argmax (``evaluation.evaluate``).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from services.data.datasets import SegmentationSource, open_source
from services.data.presence import class_presence
from services.data.protocols import Step, build_steps, joint_step
from services.data.step_dataset import SegmentationDataset
from services.data.transforms import EvalTransform, TrainTransform
from services.evaluation.evaluate import EvalResult
from services.experiments.config import ExperimentConfig, ExperimentError
from services.experiments.results import TrainSummary, format_table, result_record, step_line, step_record
from services.learning.checkpoint import load_model, save_model
from services.learning.config import RESUME_FIELDS, TrainConfig
from services.learning.step import EvalSet, StepHooks, run_step, score_model
from services.learning.trainer import Progress
from services.learning.zoo import SegModel

BASE_CACHE_VERSION = 2  # 2: aspect-kept geometry, BatchNorm policy

Log = Callable[[str], None]


def _write(message: str) -> None:
    """Print a line without breaking the progress bars."""
    tqdm.write(message)


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
        evaluation = _eval_set(config, val_src, step)
        model, scored, summary = train_and_score(config, train_src, steps, step.index, model, evaluation,
                                                 progress=progress, log=log)
        records.append(step_record(step, scored, names, [r["iou"] for r in records], summary))
        log(step_line(records[-1]))
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


def train_and_score(
    config: ExperimentConfig,
    train_src: SegmentationSource,
    steps: list[Step],
    k: int,
    previous: SegModel | None,
    evaluation: EvalSet,
    *,
    progress: bool = True,
    log: Log = _write,
) -> tuple[SegModel, EvalResult, TrainSummary]:
    """The model after step ``k`` and its scores: the (cached) base at step 0, a fresh model on the
    union for joint, else ``previous`` grown and trained by the method."""
    step = steps[k]
    from_scratch = k == 0 or config.method == "joint"
    if not from_scratch and previous is None:
        raise ExperimentError(f"step {k} needs the model of step {k - 1}")
    data = joint_step(steps, k) if config.method == "joint" else step
    # Every from-scratch model (step 0, each joint step) depends only on its data and settings:
    # cached, it is trained once for all methods and scenarios that share it.
    cached = _base_cache_path(config, train_src, data) if from_scratch else None
    if cached is not None and cached[0].is_file():
        log(f"step {k}: cached from-scratch model {cached[0]}")
        model = load_model(cached[0]).model
        scored = score_model(model, [evaluation], config.step_config(0), progress=progress)[0]
        return model, scored, TrainSummary(len(data.train_indices), cached=True)
    dataset = _train_dataset(config, train_src, data)
    class_map = {c: train_src.class_names[c] for c in step.classes}
    summary = TrainSummary(len(dataset))
    step_config = config.step_config(k)
    desc = f"step {k}" + ("" if k == 0 else f" {config.method}")
    with _ProgressBar(step_config.train, len(dataset), summary, desc, progress) as report:
        result = run_step(step_config, None if from_scratch else previous, class_map, dataset, [evaluation],
                          StepHooks(on_progress=report, progress_bars=progress))
    if cached is not None:
        cached[0].parent.mkdir(parents=True, exist_ok=True)
        save_model(cached[0], result.model, class_map, meta={"base_cache": cached[1]})
    return result.model, result.scores[0], summary


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
    train = config.train_config(from_scratch=True)
    facts = {
        "version": BASE_CACHE_VERSION,
        "data": str(Path(config.data).resolve()),
        "split": config.train_split,
        "items": items.hexdigest(),
        "train_lut": step.train_lut.tolist(),
        "classes": list(step.classes),
        "model": config.model,
        "image_size": config.image_size,
        "scale": list(_train_transform(config).scale),
        "crop": list(_train_transform(config).crop),
        "pretrained": config.pretrained,
        "backbone_weights": weights,
        "train_config": {k: getattr(train, k) for k in RESUME_FIELDS},  # those that change the weights
    }
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]
    return key, facts


# --- internals -----------------------------------------------------------------------------
def _base_cache_path(config: ExperimentConfig, train_src: SegmentationSource, step: Step) -> tuple[Path, dict] | None:
    if config.cache_dir is None:
        return None
    key, facts = base_cache_key(config, train_src, step)
    return Path(config.cache_dir) / "experiments" / f"base-{key}.pt", facts


def _eval_set(config: ExperimentConfig, val_src: SegmentationSource, step: Step) -> EvalSet:
    """The whole validation split, unseen classes void, seen classes scored: images with their
    shorter side at ``image_size``, masks at their own resolution."""
    dataset = SegmentationDataset(val_src, None, step.eval_lut, EvalTransform(config.image_size))
    return EvalSet(dataset, step.old_classes, step.new_classes, batch_size=config.batch_size)


def _train_dataset(config: ExperimentConfig, source: SegmentationSource, step: Step) -> SegmentationDataset:
    """The step's training images under its training labels, augmented."""
    return SegmentationDataset(source, step.train_indices, step.train_lut, _train_transform(config))


def _train_transform(config: ExperimentConfig) -> TrainTransform:
    """The augmentation of every training run: the engine's, shorter side at the experiment's
    ``image_size`` (times the random scale), square crops of ``crop_size``."""
    return TrainTransform(config.image_size, crop=config.train_crop)


class _ProgressBar:
    """A tqdm bar over all iterations of one training run; keeps the first and last loss terms
    and the wall time in ``summary``. Used as ``with ... as on_progress``."""

    def __init__(self, tc: TrainConfig, images: int, summary: TrainSummary, desc: str, show: bool) -> None:
        total = tc.epochs * (images // min(tc.batch_size, images))
        self.bar = tqdm(total=total, desc=desc, disable=not show, unit="it", leave=False)
        self.summary = summary

    def __enter__(self) -> Callable[[Progress], None]:
        self.started = time.perf_counter()
        return self.report

    def report(self, p: Progress) -> None:
        self.summary.last = {"loss": p.loss, **p.terms}
        if self.summary.first is None:
            self.summary.first = self.summary.last
        self.bar.n = (p.epoch - 1) * p.steps + p.step
        self.bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}", refresh=False)
        self.bar.refresh()

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        self.summary.seconds = round(time.perf_counter() - self.started, 2)


def _sample(source: SegmentationSource, limit: int, seed: int) -> SegmentationSource:
    if limit >= len(source):
        return source
    return source.subset(sorted(random.Random(seed).sample(range(len(source)), limit)))
