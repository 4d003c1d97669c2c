"""Image/mask transforms: training augmentation and the one evaluation/inference preprocessing.

Geometry: ``size`` is the SHORTER side in pixels; the aspect ratio is always kept. Training
rescales (shorter side ``size`` x s) and random-crops to a fixed crop; evaluation and inference
resize the whole image so its shorter side is ``size``, pad it to a multiple of ``STRIDE`` for the
forward (``pad_to_stride``), crop the padding off the logits (``crop_padding``) and upsample them
to the label's or the input's own resolution (``services.evaluation.predict``).

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

# Inputs are padded to a multiple of this before a forward, so every feature map covers the image
# exactly. It is the largest total stride of the zoo's networks: torchvision builds the ResNet
# backbones (DeepLab v3, FCN) at output stride 8 and the MobileNetV3 ones dilated, at 16 (DeepLab's
# "out", LR-ASPP's "high" branch; its "low" branch is at 8). tests/services/evaluation/test_predict.py
# checks every architecture against it.
STRIDE = 16

# The aspect ratio is kept up to this many times longer than wide (or high): a thinner image (a
# 1 x 40000 strip passes the pixel limit) is scaled so its longer side is MAX_ASPECT x the shorter
# side asked for, its shorter side then below it, instead of growing into billions of pixels.
MAX_ASPECT = 8

Size = int | tuple[int, int]


def as_hw(size: Size) -> tuple[int, int]:
    """``size`` as (height, width); an int means a square."""
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return int(h), int(w)


def shorter_side(size: int) -> int:
    """``size`` checked as a shorter side in pixels."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise TypeError(f"image size is the shorter side in pixels, an int; got {size!r}")
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return int(size)


def scaled_hw(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) scaled so the shorter side is ``short``, the aspect ratio kept (rounded);
    past ``MAX_ASPECT`` the longer side is held at ``short * MAX_ASPECT`` instead."""
    lo, hi = sorted((height, width))
    scale = min(short / lo, short * MAX_ASPECT / hi)
    new_lo = short if scale == short / lo else max(1, round(lo * scale))
    new_hi = max(1, round(hi * scale))
    return (new_lo, new_hi) if height <= width else (new_hi, new_lo)


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


def eval_preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """The preprocessing evaluation and inference share: the whole image resized (bilinear) so its
    shorter side is ``size``, aspect ratio kept, normalised. No padding here (``pad_to_stride``).

    Returns float [3, h, w] with min(h, w) == ``size`` (less only past ``MAX_ASPECT``).
    """
    image = image.convert("RGB")
    h, w = scaled_hw(image.height, image.width, shorter_side(size))
    if (w, h) != image.size:
        image = image.resize((w, h), Image.BILINEAR)
    return normalize(image_to_tensor(image))


def padded_hw(height: int, width: int, stride: int = STRIDE) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``stride``."""
    return -(-height // stride) * stride, -(-width // stride) * stride


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE, value: float = 0.0) -> torch.Tensor:
    """[..., H, W] padded bottom/right with ``value`` to multiples of ``stride`` (unchanged when
    already there). For a normalised image 0 is the ImageNet mean colour; crop the result of the
    forward back with ``crop_padding(logits, (H, W))``."""
    h, w = x.shape[-2:]
    ph, pw = padded_hw(h, w, stride)
    if (ph, pw) == (h, w):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h), value=value)


def crop_padding(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[..., H', W'] -> [..., h, w] for ``size`` (h, w): drops what ``pad_to_stride`` added."""
    h, w = size
    return x[..., :h, :w]


class EvalTransform:
    """(image, mask) -> (float [3, h, w] normalised by ``eval_preprocess`` (shorter side ``size``),
    long [H, W] the mask at its ORIGINAL resolution), with no randomness: scores are counted on
    the label's own pixels (``services.evaluation.evaluate`` upsamples the logits to it)."""

    def __init__(self, size: int) -> None:
        self.size = shorter_side(size)

    def __call__(self, image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        if image.size != mask.size:
            raise ValueError(f"image is {image.size} but mask is {mask.size} (width, height)")
        return eval_preprocess(image, self.size), mask_to_tensor(mask)


class TrainTransform:
    """Aligned augmentation: random scale, pad + random crop to ``crop``, horizontal flip.

    The image is resized so its shorter side is round(``size`` * s), s uniform in ``scale``, the
    aspect ratio kept: evaluation shows the whole image with its shorter side at ``size``, so
    training sees objects at the sizes evaluation shows them, give or take the augmentation. Then
    a random ``crop`` (an int for a square or (h, w); default ``size`` x ``size``) is cut, padded
    first where the image is smaller: 0 for the image (before normalisation) and 255 (void) for
    the mask, so padded pixels never count in a loss. Returns (float [3, h, w] normalised,
    long [h, w]) of the crop's size.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.5, 2.0),
        flip_p: float = 0.5,
        generator: torch.Generator | None = None,
        crop: Size | None = None,
    ) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got {scale}")
        self.size = shorter_side(size)
        self.crop = as_hw(self.size if crop is None else crop)
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
        h, w = self.crop
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * self._rand()
        sh, sw = scaled_hw(image.height, image.width, max(1, round(self.size * s)))
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
