"""Per-class scores of a version, the service's way.

A class is scored on the validation images of the task that introduced it (background on the
lineage's first task): IoU = TP / (TP + FP + FN) over those images, where predicting the class on
a pixel labelled anything else is a false positive. Every known class is scored for every version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from services.data.step_dataset import SegmentationDataset
from services.data.transforms import EvalTransform
from services.evaluation.evaluate import evaluate
from services.jobs.classes import channel_names, channels_of, local_to_channel_lut
from services.jobs.data import local_source
from services.jobs.plan import ScoringTask


@dataclass(frozen=True)
class ClassScore:
    iou: float | None  # None: the class is in neither the labels nor the predictions
    tp: int
    fp: int
    fn: int


def score_classes(
    model: torch.nn.Module,
    class_map: Mapping[int | str, str],
    sets: Sequence[tuple[ScoringTask, Sequence[tuple[Path, Path]]]],
    image_size: int,
    device: torch.device | str,
) -> dict[int, ClassScore]:
    """{global class index: score} for every class a set introduced that the model knows.

    sets: each task that introduced classes, with its validation (image, mask) files on disk."""
    channels = channels_of(class_map)
    names = channel_names(class_map)
    scores: dict[int, ClassScore] = {}
    for task, pairs in sets:
        known = [c for c in task.introduced if c in channels]
        if not known or not pairs:
            continue
        lut = local_to_channel_lut(task.spec, task.assigned, class_map)
        source = local_source(task.task_id, "val", pairs, list(names.values()))
        dataset = SegmentationDataset(source, None, lut, EvalTransform(image_size))
        counts = evaluate(model, dataset, len(channels), device).confusion.counts
        for index in known:
            scores[index] = _score(counts, channels.index(index))
    return scores


def _score(counts: torch.Tensor, ch: int) -> ClassScore:
    tp = int(counts[ch, ch])
    fp = int(counts[:, ch].sum()) - tp  # predicted ch where the label is another class
    fn = int(counts[ch, :].sum()) - tp  # labelled ch, predicted something else
    denom = tp + fp + fn
    return ClassScore(iou=tp / denom if denom else None, tp=tp, fp=fp, fn=fn)
