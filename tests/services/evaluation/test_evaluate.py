"""evaluate(): a model over a dataset, scored into old/new/all mIoU at each label's own resolution."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import nn

from services.evaluation.evaluate import evaluate
from services.learning.zoo import build_model


class _Out(NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor


class ReadChannelModel(nn.Module):
    """Predicts the class written in the image's first channel: logits = one-hot of it.

    A transparent model whose predictions the test fixes by the images it feeds.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> _Out:
        cls = x[:, 0].round().long().clamp(0, self.num_classes - 1)
        logits = nn.functional.one_hot(cls, self.num_classes).permute(0, 3, 1, 2).float()
        return _Out(logits, x)


def _item(pred: list[list[int]], target: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.tensor(pred, dtype=torch.float32)
    return torch.stack([p, p, p]), torch.tensor(target)


def test_evaluate_scores_every_item() -> None:
    # Same pixels as the hand-worked confusion matrix, split over three items and two batches.
    data = [
        _item([[0, 1]], [[0, 0]]),
        _item([[1, 1]], [[1, 1]]),
        _item([[2, 0]], [[2, 2]]),
        _item([[2, 0]], [[255, 1]]),
    ]
    model = ReadChannelModel(3).train()
    result = evaluate(model, data, 3, "cpu", old_classes=[0], new_classes=[1, 2], batch_size=3)
    assert result.confusion.counts.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    assert result.iou == pytest.approx([0.25, 0.5, 0.5])
    assert result.miou_all == pytest.approx(1.25 / 3)
    assert result.miou_old == pytest.approx(0.25)
    assert result.miou_new == pytest.approx(0.5)
    assert result.pixel_accuracy == pytest.approx(4 / 7)
    assert result.named_iou(["bg", "x", "y"]) == pytest.approx({"bg": 0.25, "x": 0.5, "y": 0.5})
    assert not model.training


def test_evaluate_without_old_classes_reports_none() -> None:
    result = evaluate(ReadChannelModel(2), [_item([[1]], [[1]])], 2, new_classes=[1])
    assert result.miou_old is None and result.miou_new == 1.0


def test_evaluate_refuses_a_model_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="model outputs 2 classes but 3 are evaluated"):
        evaluate(ReadChannelModel(2), [_item([[1]], [[1]])], 3)


def test_logits_are_upsampled_to_the_labels_own_resolution() -> None:
    """A 1x2 image scored against a 2x4 label: its logits are upsampled bilinearly to the label
    (left half class 0, right half class 1), not the label shrunk to the image."""
    image, _ = _item([[0, 1]], [[0, 1]])
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    result = evaluate(ReadChannelModel(2), [(image, target)], 2)
    assert result.confusion.counts.tolist() == [[3, 0], [1, 4]]


class MeanThresholdModel(nn.Module):
    """Class 1 where the first channel is above its mean over the whole input, else class 0: a
    global statistic, so an image padded to a larger batch-mate's size would be read differently."""

    num_classes = 2

    def forward(self, x: torch.Tensor) -> _Out:
        above = (x[:, 0] > x[:, 0].mean(dim=(-2, -1), keepdim=True)).float()
        return _Out(torch.stack([1 - above, above], 1), x)


def _mean_item(height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=g)
    return image, torch.randint(0, 2, (2 * height, 2 * width), generator=g)


@pytest.mark.parametrize("model", [MeanThresholdModel(), "network"])
def test_an_images_score_does_not_depend_on_its_batch(model) -> None:
    """Images of several sizes (multiples of the stride, so none is padded on its own) in one batch
    score exactly as each does alone, whatever the batch size: no image is padded to another's size."""
    if model == "network":
        torch.manual_seed(0)
        model = build_model("lraspp_mobilenet_v3_large", 2).train()  # evaluate puts it in eval mode
    data = [_mean_item(32, 48, 0), _mean_item(16, 16, 1), _mean_item(32, 48, 2), _mean_item(48, 32, 3),
            _mean_item(16, 16, 4)]
    alone = sum(evaluate(model, [item], 2).confusion.counts for item in data)
    for batch_size in (2, 5):
        assert torch.equal(evaluate(model, data, 2, batch_size=batch_size).confusion.counts, alone)
