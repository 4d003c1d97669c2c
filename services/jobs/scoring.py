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


@dataclass(frozen=True)
class ClassScore:
    iou: float | None  # None: the class is in neither the labels nor the predictions
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class ScoringSet:
    """The validation images of one task, and the classes it introduced (global indices)."""

    task_id: str
    spec: Mapping
    assigned: Mapping[str, int]
    pairs: Sequence[tuple[Path, Path]]
    introduced: Sequence[int]


def score_classes(
    model: torch.nn.Module,
    class_map: Mapping[int | str, str],
    sets: Sequence[ScoringSet],
    image_size: int,
    device: torch.device | str,
) -> dict[int, ClassScore]:
    """{global class index: score} for every class a set introduced that the model knows."""
    channels = channels_of(class_map)
    names = channel_names(class_map)
    scores: dict[int, ClassScore] = {}
    for scoring_set in sets:
        known = [c for c in scoring_set.introduced if c in channels]
        if not known or not scoring_set.pairs:
            continue
        lut = local_to_channel_lut(scoring_set.spec, scoring_set.assigned, class_map)
        source = local_source(scoring_set.task_id, "val", scoring_set.pairs, list(names.values()))
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
