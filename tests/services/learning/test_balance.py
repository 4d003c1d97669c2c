"""Median-frequency class weights, by hand."""

from __future__ import annotations

import pytest
import torch

from services.learning.balance import MAX_WEIGHT, class_weights, pixel_frequencies


def test_pixel_frequencies_count_only_images_that_show_the_class() -> None:
    # Image 1: 3 pixels of class 0, 1 of class 1. Image 2: 2 of class 0, 1 of class 2, 1 void.
    masks = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [2, 255]]])
    f = pixel_frequencies([masks[:1], masks[1:]], 4)
    # class 0: 5 of 7 labelled pixels; class 1: 1 of image 1's 4; class 2: 1 of image 2's 3; class 3: unseen.
    assert torch.allclose(f, torch.tensor([5 / 7, 1 / 4, 1 / 3, 0.0], dtype=torch.float64))


def test_class_weights_are_median_over_frequency_to_a_power() -> None:
    f = torch.tensor([0.5, 0.25, 0.125, 0.0], dtype=torch.float64)  # median of the shown: 0.25
    assert torch.allclose(class_weights(f, 1.0), torch.tensor([0.5, 1.0, 2.0, 1.0]))
    assert torch.allclose(class_weights(f, 0.5), torch.tensor([0.5**0.5, 1.0, 2**0.5, 1.0]))
    assert torch.equal(class_weights(f, 0.0), torch.ones(4))


def test_class_weights_are_bounded() -> None:
    f = torch.tensor([0.9, 0.9, 1e-6], dtype=torch.float64)
    assert class_weights(f, 1.0)[2].item() == pytest.approx(MAX_WEIGHT)
    assert torch.equal(class_weights(torch.zeros(3, dtype=torch.float64), 1.0), torch.ones(3))
