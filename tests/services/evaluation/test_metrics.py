"""ConfusionMatrix and IoU metrics against numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from services.evaluation.confusion import ConfusionMatrix
from services.evaluation.metrics import forgetting, mean_iou, per_class_iou, pixel_accuracy

TARGET = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
PRED = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])


def _cm() -> ConfusionMatrix:
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    return cm


def test_counts_by_hand() -> None:
    # (gt, pred) pairs, the void pixel skipped: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,0)
    assert _cm().counts.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]


def test_iou_miou_and_accuracy_by_hand() -> None:
    cm = _cm()
    # class 0: TP 1, GT 2, pred 3 -> 1/4; class 1: TP 2, GT 3, pred 3 -> 2/4; class 2: TP 1, GT 2, pred 1 -> 1/2
    assert per_class_iou(cm) == pytest.approx([0.25, 0.5, 0.5])
    assert mean_iou(cm) == pytest.approx(1.25 / 3)
    assert mean_iou(cm, [1, 2]) == pytest.approx(0.5)
    assert mean_iou(cm, [0]) == pytest.approx(0.25)
    assert pixel_accuracy(cm) == pytest.approx(4 / 7)


def test_classes_absent_from_ground_truth() -> None:
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 0, 2, 1]), torch.tensor([0, 0, 1, 1]))
    ious = per_class_iou(cm)
    assert ious[3] is None  # neither in ground truth nor predicted: undefined
    assert ious[2] == 0.0  # predicted but absent: IoU 0 ...
    assert mean_iou(cm) == pytest.approx((1.0 + 0.5) / 2)  # ... yet in no mean (not in the GT)
    assert mean_iou(cm, [2, 3]) is None
    assert pixel_accuracy(ConfusionMatrix(2)) is None


def test_accumulates_and_merges() -> None:
    a, b = _cm(), _cm()
    a.update(PRED, TARGET)
    b.merge(_cm())
    assert torch.equal(a.counts, b.counts) and int(a.counts.sum()) == 14
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(ConfusionMatrix(4))


def test_bad_inputs_are_named() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target holds class 3 outside 0..2"):
        cm.update(torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="prediction holds class 5"):
        cm.update(torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
    cm.update(torch.tensor([7]), torch.tensor([255]))  # a void pixel is never checked nor counted
    assert int(cm.counts.sum()) == 0


def test_forgetting() -> None:
    history = [
        {"a": 0.8, "b": None},
        {"a": 0.5, "b": 0.6},
        {"a": 0.6, "b": 0.3, "c": 0.9},
    ]
    assert forgetting(history) == pytest.approx({"a": 0.2, "b": 0.3})
    assert forgetting(history[:1]) == {}
    assert forgetting([]) == {}
