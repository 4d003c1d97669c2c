"""Every score Strata reports, computed here and only here: per-class IoU from counts or from a
confusion matrix, means over class subsets, pixel accuracy and forgetting.

IoU_c = TP / (TP + FP + FN); it is undefined (None) for a class absent from both ground truth
and prediction. Following method.md, a mean IoU over a confusion matrix runs over the classes
present in the ground truth only: a class never shown cannot be scored, and a class predicted
but absent scores in no mean (its false positives already lower the IoU of the classes they
were taken from). Means over stored scores run over the classes that have one.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from services.evaluation.confusion import ConfusionMatrix

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class ClassScore:
    """One class's counts over a set of images, and its IoU (None: in neither labels nor predictions)."""

    iou: float | None
    tp: int
    fp: int
    fn: int


def iou_from_counts(tp: int, fp: int, fn: int) -> float | None:
    """TP / (TP + FP + FN); None when all three are 0."""
    denom = tp + fp + fn
    return tp / denom if denom else None


def class_score(cm: ConfusionMatrix, c: int) -> ClassScore:
    """Class ``c``'s counts: predicting it on a pixel labelled anything else is a false positive."""
    tp = int(cm.counts[c, c])
    fp = int(cm.counts[:, c].sum()) - tp  # predicted c where the label is another class
    fn = int(cm.counts[c, :].sum()) - tp  # labelled c, predicted something else
    return ClassScore(iou_from_counts(tp, fp, fn), tp, fp, fn)


def per_class_iou(cm: ConfusionMatrix) -> list[float | None]:
    """IoU per class index; None where the class is in neither ground truth nor prediction."""
    return [class_score(cm, c).iou for c in range(cm.num_classes)]


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None; None if none is."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def mean_iou(cm: ConfusionMatrix, classes: Iterable[int] | None = None) -> float | None:
    """Mean IoU over ``classes`` (default: all) that appear in the ground truth; None if none do."""
    ious, gt = per_class_iou(cm), cm.gt_pixels
    chosen = range(cm.num_classes) if classes is None else classes
    return mean([ious[c] for c in chosen if gt[c] > 0])


def pixel_accuracy(cm: ConfusionMatrix) -> float | None:
    """Correct pixels / scored pixels; None when nothing was scored."""
    total = int(cm.counts.sum())
    return float(cm.counts.diag().sum()) / total if total else None


def forgetting_vs(reference: Mapping[K, float | None], now: Mapping[K, float | None]) -> dict[K, float]:
    """Per class scored in both: the reference IoU (e.g. the parent's) minus IoU now; positive =
    the class got worse."""
    return {c: reference[c] - v for c, v in now.items() if v is not None and reference.get(c) is not None}


def forgetting(history: Sequence[Mapping[K, float | None]]) -> dict[K, float]:
    """Per class: best IoU at an earlier step minus IoU now (last entry of ``history``).

    ``history`` lists per-step {class: IoU or None}, keyed by class name or index. Classes
    without an earlier or a current value are left out; a positive number means the class got
    worse.
    """
    if not history:
        return {}
    *earlier, now = history
    result = {}
    for name, value in now.items():
        past = [h[name] for h in earlier if h.get(name) is not None]
        if value is not None and past:
            result[name] = max(past) - value
    return result
