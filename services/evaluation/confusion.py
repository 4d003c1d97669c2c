"""A confusion matrix accumulated on torch.bincount; ignored (255) pixels are left out."""

from __future__ import annotations

import torch

from services.labels import IGNORE_INDEX


class ConfusionMatrix:
    """Counts [C, C]: row = ground-truth class, column = predicted class."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. pred, target: integer tensors of the same shape (e.g. [N, H, W])."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        valid = target != IGNORE_INDEX
        pred, target = pred[valid], target[valid]
        c = self.num_classes
        for name, t in (("target", target), ("prediction", pred)):
            bad = t[(t < 0) | (t >= c)]
            if bad.numel():
                raise ValueError(f"{name} holds class {int(bad[0])} outside 0..{c - 1} ({IGNORE_INDEX} = void)")
        self.counts += torch.bincount(target * c + pred, minlength=c * c).view(c, c)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix of the same size (e.g. from another process)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        self.counts += other.counts

    @property
    def gt_pixels(self) -> torch.Tensor:
        """Ground-truth pixels per class, [C]."""
        return self.counts.sum(1)

    @property
    def pred_pixels(self) -> torch.Tensor:
        """Predicted pixels per class, [C]."""
        return self.counts.sum(0)
