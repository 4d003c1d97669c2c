"""Image/mask transforms: training augmentation and the one evaluation/inference preprocessing.

Images are resized bilinearly, masks with NEAREST (class indices must never be blended).
Randomness comes from a ``torch.Generator`` when one is given, else from torch's global RNG,
which DataLoader workers seed from ``torch.manual_seed``: either way a run is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from services.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = int | tuple[int, int]


def as_hw(size: Size) -> tuple[int, int]:
    """``size`` as (height, width); an int means a square."""
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return int(h), int(w)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float [3, H, W] in [0, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def mask_to_tensor(mask: Image.Image) -> torch.Tensor:
    """Index mask PIL image -> long [H, W]."""
    return torch.from_numpy(np.asarray(mask, dtype=np.uint8).copy()).long()


def normalize(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] or [N, 3, H, W] in [0, 1] -> ImageNet-normalised, same shape."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype).view(3, 1, 1)
    return (image - mean) / std


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype).view(3, 1, 1)
    return image * std + mean


def eval_preprocess(image: Image.Image, size: Size) -> torch.Tensor:
    """The preprocessing evaluation and inference share: resize to ``size``, normalise.

    Returns float [3, h, w].
    """
    h, w = as_hw(size)
    return normalize(image_to_tensor(image.convert("RGB").resize((w, h), Image.BILINEAR)))


def eval_mask(mask: Image.Image, size: Size) -> torch.Tensor:
    """The evaluation label at the evaluated size: NEAREST resize, long [h, w]."""
    h, w = as_hw(size)
    return mask_to_tensor(mask.resize((w, h), Image.NEAREST))


class EvalTransform:
    """(image, mask) -> (float [3, h, w] normalised, long [h, w]) with no randomness."""

    def __init__(self, size: Size) -> None:
        self.size = as_hw(size)

    def __call__(self, image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return eval_preprocess(image, self.size), eval_mask(mask, self.size)


class TrainTransform:
    """Aligned augmentation: random scale, pad + random crop to ``size``, horizontal flip.

    The scale is relative to the evaluation size (the image is first brought to ``size`` as
    evaluation does, then scaled by s in ``scale``), so training sees the objects at the sizes
    evaluation shows them, give or take the augmentation. Padding is 0 for the image (before
    normalisation) and 255 (void) for the mask, so padded pixels never count in a loss.
    Returns (float [3, h, w] normalised, long [h, w]).
    """

    def __init__(
        self,
        size: Size,
        scale: tuple[float, float] = (0.5, 2.0),
        flip_p: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got {scale}")
        self.size = as_hw(size)
        self.scale = scale
        self.flip_p = flip_p
        self.generator = generator

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _randint(self, high: int) -> int:
        """Uniform integer in [0, high]."""
        return int(torch.randint(0, high + 1, (), generator=self.generator))

    def __call__(self, image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        if image.size != mask.size:
            raise ValueError(f"image is {image.size} but mask is {mask.size} (width, height)")
        h, w = self.size
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * self._rand()
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        img = image_to_tensor(image.convert("RGB").resize((sw, sh), Image.BILINEAR))
        msk = mask_to_tensor(mask.resize((sw, sh), Image.NEAREST))
        img, msk = _pad_to(img, msk, h, w)
        top, left = self._randint(img.shape[1] - h), self._randint(img.shape[2] - w)
        img, msk = img[:, top : top + h, left : left + w], msk[top : top + h, left : left + w]
        if self._rand() < self.flip_p:
            img, msk = img.flip(-1), msk.flip(-1)
        return normalize(img.contiguous()), msk.contiguous()


def _pad_to(img: torch.Tensor, msk: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right to at least (h, w): image with 0, mask with void. [3,H,W], [H,W]."""
    ph, pw = max(0, h - img.shape[1]), max(0, w - img.shape[2])
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph), value=0.0)
        msk = F.pad(msk, (0, pw, 0, ph), value=IGNORE_INDEX)
    return img, msk
