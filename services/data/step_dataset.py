"""A torch Dataset over some items of a source, relabelled by a lookup table, transformed; optionally
decoded once into memory (``preload``) so that epochs after the first skip reading and decoding."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from services.data.datasets import SegmentationSource
from services.data.transforms import scaled_hw

log = logging.getLogger(__name__)

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
        self._decoded: list[tuple[np.ndarray, np.ndarray]] | None = None  # (image [H, W, 3], mask [H, W]) uint8
        self._preloaded_with: tuple[int | None, int] | None = None  # preload's (max_short, budget_bytes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._decoded is not None:
            image, mask = self._decoded[i]
            return self.transform(Image.fromarray(image), Image.fromarray(mask))
        image, mask = self._load(i)
        return self.transform(image, Image.fromarray(mask))

    def preload(self, max_short: int | None, budget_bytes: int, threads: int = 4) -> bool:
        """Decode every item into memory, each image and mask first scaled down (never up) so that its
        shorter side is at most ``max_short`` (the largest a transform of this dataset draws; None:
        kept as they are). Skipped, returning False, when they would take more than ``budget_bytes``
        (sizes are read off the files' headers first). Loader workers forked afterwards share it."""
        needed = sum(self._decoded_bytes(i, max_short) for i in range(len(self)))
        if needed > budget_bytes:
            log.info("%s: %d decoded images would take %.0f MB, over the cache's %.0f MB: decoded every epoch",
                     self.source.name, len(self), needed / 2**20, budget_bytes / 2**20)
            return False
        with ThreadPoolExecutor(max(1, threads)) as pool:  # decoding releases the GIL
            self._decoded = list(pool.map(lambda i: self._load_scaled(i, max_short), range(len(self))))
        self._preloaded_with = (max_short, budget_bytes)
        log.info("%s: %d images decoded in memory (%.0f MB)", self.source.name, len(self), needed / 2**20)
        return True

    def __getstate__(self) -> dict:
        # Pickled (a training rank's job file, a spawned loader worker): the decoded images do not
        # travel, the other side decodes its own from the local files (__setstate__).
        return {**self.__dict__, "_decoded": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._preloaded_with is not None:
            self.preload(*self._preloaded_with)

    def _load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        """Item ``i`` read from its files: (RGB image, relabelled mask uint8 [H, W])."""
        item = self.indices[i]
        image = self.source.load_image(item)
        mask = self.lut[self.source.load_mask(item)]
        if mask.shape != (image.height, image.width):
            img_path, mask_path = self.source.items[item]
            raise ValueError(
                f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {img_path.name} "
                f"is {image.width}x{image.height}"
            )
        return image, mask

    def _load_scaled(self, i: int, max_short: int | None) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self._load(i)
        if max_short is not None and min(image.size) > max_short:
            h, w = scaled_hw(image.height, image.width, max_short)
            image = image.resize((w, h), Image.BILINEAR)
            mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
        return np.asarray(image, dtype=np.uint8), np.ascontiguousarray(mask, dtype=np.uint8)

    def _decoded_bytes(self, i: int, max_short: int | None) -> int:
        with Image.open(self.source.items[self.indices[i]][0]) as im:  # reads the header only
            width, height = im.size
        if max_short is not None and min(width, height) > max_short:
            height, width = scaled_hw(height, width, max_short)
        return height * width * 4  # RGB + mask
