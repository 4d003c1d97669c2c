"""Metrics from a confusion matrix: per-class IoU, mIoU over a class subset, accuracy, forgetting.

IoU_c = TP / (TP + FP + FN); it is undefined (None) for a class absent from both ground truth
and prediction. Following method.md, a mean IoU runs over the classes present in the ground
truth only: a class never shown cannot be scored, and a class predicted but absent scores in
no mean (its false positives already lower the IoU of the classes they were taken from).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.evaluation.confusion import ConfusionMatrix


def per_class_iou(cm: ConfusionMatrix) -> list[float | None]:
    """IoU per class index; None where the class is in neither ground truth nor prediction."""
    tp = cm.counts.diag().double()
    union = cm.gt_pixels.double() + cm.pred_pixels.double() - tp
    return [float(t / u) if u > 0 else None for t, u in zip(tp, union)]


def mean_iou(cm: ConfusionMatrix, classes: Iterable[int] | None = None) -> float | None:
    """Mean IoU over ``classes`` (default: all) that appear in the ground truth; None if none do."""
    ious, gt = per_class_iou(cm), cm.gt_pixels
    chosen = range(cm.num_classes) if classes is None else classes
    values = [ious[c] for c in chosen if gt[c] > 0]
    return sum(values) / len(values) if values else None


def pixel_accuracy(cm: ConfusionMatrix) -> float | None:
    """Correct pixels / scored pixels; None when nothing was scored."""
    total = int(cm.counts.sum())
    return float(cm.counts.diag().sum()) / total if total else None


def forgetting(history: Sequence[Mapping[str, float | None]]) -> dict[str, float]:
    """Per class: best IoU at an earlier step minus IoU now (last entry of ``history``).

    ``history`` lists per-step {class: IoU or None}. Classes without an earlier or a current
    value are left out; a positive number means the class got worse.
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
