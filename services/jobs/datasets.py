"""A step's data on this machine: the task's images and masks fetched to the local cache (sha256
checked), as the datasets it trains and is scored on, and the per-class scores read off them.

A class is scored on the validation images of the task that introduced it (background on the
lineage's first task): IoU = TP / (TP + FP + FN) over those images, where predicting the class on
a pixel labelled anything else is a false positive. Every known class is scored for every version.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.data.datasets import SegmentationSource
from services.data.step_dataset import SegmentationDataset
from services.data.transforms import EvalTransform, TrainTransform
from services.evaluation.evaluate import EvalResult
from services.evaluation.metrics import ClassScore, class_score
from services.jobs.plan import ItemRef, ScoringTask, StepPlan
from services.jobs.spec import ResolvedSpec
from services.learning.classmap import channel_names, channels_of, local_to_channel_lut
from services.learning.step import EvalSet
from services.storage import ObjectStore
from services.storage.cache import fetch, object_path

# Stored masks are already in the task's local form: the lookup table of each dataset relabels them.
IDENTITY = np.arange(256, dtype=np.int16)


def fetch_items(store: ObjectStore, items: Sequence[ItemRef], cache_dir: Path) -> list[tuple[Path, Path]]:
    """Download (or reuse) every item's image and mask; [(image path, mask path)] in item order."""
    return [(fetch(store, i.image_key, i.image_sha256, object_path(cache_dir, i.image_key)),
             fetch(store, i.mask_key, i.mask_sha256, object_path(cache_dir, i.mask_key)))
            for i in items]


def train_set(store: ObjectStore, cache_dir: Path, plan: StepPlan, *, cache_mb: int = 0) -> SegmentationDataset:
    """The task's training images, masks mapped to the new model's channels, augmented (shorter
    side at the spec's image size times the random scale, image_size x image_size crops).

    With ``cache_mb`` > 0 they are decoded into memory once, scaled down to the largest size the
    augmentation draws, when they fit (``SegmentationDataset.preload``). The trainer seeds each
    item's augmentation (services.learning.sampling): a resumed run sees the same crops and flips."""
    pairs = fetch_items(store, plan.train_items, cache_dir)
    lut = _lut(plan.spec, plan.class_map)
    transform = TrainTransform(plan.spec.image_size)
    dataset = SegmentationDataset(_source(plan.task_id, "train", pairs, plan.class_map), None, lut, transform)
    if cache_mb > 0:
        dataset.preload(math.ceil(transform.size * transform.scale[1]), cache_mb * 2**20)
    return dataset


def scoring_sets(store: ObjectStore, cache_dir: Path, plan: StepPlan) -> list[tuple[ScoringTask, EvalSet]]:
    """Every task that introduced a class of the new version and has validation images, with
    them fetched: images with their shorter side at the step's image size, masks (the scored
    pixels) at their own resolution."""
    channels = channels_of(plan.class_map)
    sets = []
    for task in plan.scoring:
        if not task.val_items or not any(c in channels for c in task.introduced):
            continue
        pairs = fetch_items(store, task.val_items, cache_dir)
        dataset = SegmentationDataset(_source(task.task_id, "val", pairs, plan.class_map), None,
                                      _lut(task.spec, plan.class_map), EvalTransform(plan.spec.image_size))
        sets.append((task, EvalSet(dataset)))
    return sets


def class_scores(plan: StepPlan, tasks: Sequence[ScoringTask], results: Sequence[EvalResult]) -> dict[int, ClassScore]:
    """{global class index: score} for every class a scoring task introduced that the model knows;
    ``results``: each task's evaluation, in order."""
    channels = channels_of(plan.class_map)
    return {index: class_score(result.confusion, channels.index(index))
            for task, result in zip(tasks, results, strict=True) for index in task.introduced if index in channels}


def _lut(spec: ResolvedSpec, class_map: dict[int, str]) -> np.ndarray:
    return local_to_channel_lut(spec.classes, spec.also_labelled, spec.assigned_classes, class_map)


def _source(task_id: str, split: str, pairs: Sequence[tuple[Path, Path]],
            class_map: dict[int, str]) -> SegmentationSource:
    """A source over stored local masks; relabelling happens through the dataset's lookup table."""
    return SegmentationSource(name=f"task {task_id}", split=split, class_names=tuple(channel_names(class_map).values()),
                              items=tuple(pairs), raw_to_class=IDENTITY)
