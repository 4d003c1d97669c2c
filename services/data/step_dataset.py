"""A torch Dataset over some items of a source, relabelled by a lookup table, transformed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from services.data.datasets import SegmentationSource

PairTransform = Callable[[Image.Image, Image.Image], tuple[torch.Tensor, torch.Tensor]]


class SegmentationDataset(Dataset):
    """Yields (image float [3, h, w], mask long [h, w]) for ``source.items[indices]``.

    The mask is read in class space, relabelled through ``lut`` (uint8 [256], e.g. a step's
    training or evaluation table), then passed with the image through ``transform``.
    """

    def __init__(
        self,
        source: SegmentationSource,
        indices: Sequence[int] | None,
        lut: np.ndarray,
        transform: PairTransform,
    ) -> None:
        if lut.shape != (256,) or lut.dtype != np.uint8:
            raise ValueError(f"lut must be uint8 [256], got {lut.dtype} {lut.shape}")
        self.source = source
        self.indices = list(range(len(source)) if indices is None else indices)
        self.lut = lut
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.indices[i]
        image = self.source.load_image(item)
        mask = self.lut[self.source.load_mask(item)]
        if mask.shape != (image.height, image.width):
            img_path, mask_path = self.source.items[item]
            raise ValueError(
                f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {img_path.name} "
                f"is {image.width}x{image.height}"
            )
        return self.transform(image, Image.fromarray(mask))
