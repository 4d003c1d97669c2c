"""Helpers for the learning tests: a tiny architecture and a small in-memory segmentation dataset."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

TINY_ARCH = "lraspp_mobilenet_v3_large"


class RandomSegDataset(Dataset):
    """n random images [3, size, size] with masks of classes 0..num_classes-1 and a void border."""

    def __init__(self, n: int, num_classes: int, size: int = 32, seed: int = 0, flip: bool = False) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.flip = flip  # a random horizontal flip drawn from the global RNG, as augmentations do
        self.images = torch.randn(n, 3, size, size, generator=gen)
        self.masks = torch.randint(0, num_classes, (n, size, size), generator=gen)
        self.masks[:, 0] = 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.flip and torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


def class_map(n: int) -> dict[int, str]:
    return {0: "background", **{i: f"class{i}" for i in range(1, n)}}
