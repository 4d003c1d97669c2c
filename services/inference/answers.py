"""A mask in the other forms /segment answers with, besides the index PNG (``images.encode_mask_png``):

- ``class_regions``: every class present, as COCO describes a region: its area, its bounding box
  and its run-length encoding, made by ``pycocotools.mask.encode`` (column-major, the compressed
  string form), so ``pycocotools.mask.decode`` gives the class's binary mask back. Background is a
  class like any other: the regions tile the image.
- ``overlay_png``: the image blended with each pixel's class colour (the legend's, ``MASK_PALETTE``),
  for people to look at.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from services.inference.images import MASK_PALETTE, PNG_COMPRESS_LEVEL

OVERLAY_ALPHA = 0.5  # the class colour's weight in an overlay pixel when the caller does not say
_COLOURS = np.frombuffer(MASK_PALETTE, dtype=np.uint8).reshape(256, 3).astype(np.float64)
# Pixels blended at once: bounds the overlay's float temporaries (~50 MB) whatever the image's size.
_BLEND_CHUNK_PIXELS = 1 << 20


@dataclass(frozen=True)
class ClassRegion:
    """Where one class is in a mask, in COCO's terms."""

    index: int  # the global class index (the mask's value)
    name: str
    area: int  # pixels
    bbox: tuple[int, int, int, int]  # x, y, width, height of the smallest box around them
    rle: dict[str, object]  # {"size": [height, width], "counts": "<COCO compressed RLE>"}


def class_regions(mask: np.ndarray, names: Mapping[int, str]) -> list[ClassRegion]:
    """Every class present in ``mask`` (uint8 [H, W] of global indices), by index, as a COCO region."""
    _check_mask(mask)
    counts = np.bincount(mask.ravel(), minlength=256)
    present = [int(i) for i in np.flatnonzero(counts)]
    unknown = [i for i in present if i not in names]
    if unknown:
        raise ValueError(f"mask holds values {unknown} that are not classes of the model")
    # COCO's RLE runs down the columns: one column-major copy, and each comparison keeps its order.
    columns = np.asfortranarray(mask)
    regions = []
    for index in present:
        rle = coco_mask.encode((columns == index).view(np.uint8))
        x, y, w, h = (int(v) for v in coco_mask.toBbox(rle))
        regions.append(ClassRegion(
            index=index, name=names[index], area=int(counts[index]), bbox=(x, y, w, h),
            rle={"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}))
    return regions


def overlay_png(image: Image.Image, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> bytes:
    """An RGB PNG at the image's size: each pixel round(alpha * its class's colour + (1 - alpha) * the
    image's pixel), rounded half to even, per channel. The image is read as RGB like the model reads
    it (greyscale spread to three channels, transparency dropped)."""
    _check_mask(mask)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha is a weight from 0 to 1, got {alpha}")
    rgb = np.asarray(image.convert("RGB"))
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]}, the image {rgb.shape[1]}x{rgb.shape[0]}")
    out = np.empty_like(rgb)
    rows = max(1, _BLEND_CHUNK_PIXELS // max(1, mask.shape[1]))
    for top in range(0, mask.shape[0], rows):
        part = slice(top, top + rows)
        blended = alpha * _COLOURS[mask[part]] + (1.0 - alpha) * rgb[part]
        out[part] = np.rint(blended).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(out).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _check_mask(mask: np.ndarray) -> None:
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"a mask is uint8 [H, W], got {mask.dtype} {list(mask.shape)}")
