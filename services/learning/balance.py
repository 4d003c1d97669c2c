"""Class weights for the classification losses, from the pixel frequencies of a step's labels.

Thin and rare classes (poles, signs, pedestrians, bicyclists: under 1 % of CamVid's pixels each)
are drowned by road and sky in a pixel-averaged cross-entropy. Median-frequency balancing
(Eigen & Fergus 2015, used by SegNet on CamVid) weighs class c by median_f / f_c, where f_c is
c's pixel count over the pixel count of the images that show c. Its square root is the gentler
form: rare classes count more without the model painting them everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from services.labels import IGNORE_INDEX

# Bounds on a weight, so that a class seen in a few pixels cannot dominate the loss.
MIN_WEIGHT, MAX_WEIGHT = 0.1, 10.0


def pixel_frequencies(masks: Iterable[Tensor], num_classes: int) -> Tensor:
    """f_c for each channel: pixels labelled c / labelled pixels of the images that show c.

    masks: long [N, H, W] batches (255 ignored). Returns float64 [num_classes], 0 for a class no
    image shows."""
    pixels = torch.zeros(num_classes, dtype=torch.float64)
    shown_in = torch.zeros(num_classes, dtype=torch.float64)
    for batch in masks:
        for mask in batch:
            labelled = mask[mask != IGNORE_INDEX]
            counts = torch.bincount(labelled, minlength=num_classes)[:num_classes].double()
            pixels += counts
            shown_in += (counts > 0).double() * labelled.numel()
    return torch.where(shown_in > 0, pixels / shown_in.clamp(min=1), torch.zeros_like(pixels))


def class_weights(frequencies: Tensor, power: float) -> Tensor:
    """(median f / f_c) ** power, clamped to [MIN_WEIGHT, MAX_WEIGHT]; 1 for a class never shown.

    power 1: median-frequency balancing; 0.5: its square root; 0: no weighting. -> float32 [C]."""
    shown = frequencies > 0
    if not shown.any():
        return torch.ones_like(frequencies, dtype=torch.float32)
    median = frequencies[shown].median()
    weights = torch.ones_like(frequencies)
    weights[shown] = (median / frequencies[shown]) ** power
    return weights.clamp(MIN_WEIGHT, MAX_WEIGHT).float()
