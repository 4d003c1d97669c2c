"""Images in and masks out: decoding an upload, encoding a mask as an 8-bit index PNG.

The mask PNG is palette-mode ("P"): each pixel's value is its GLOBAL class index (what
``np.asarray(Image.open(png))`` returns), and the palette gives every class its fixed legend
colour, so the file also displays as a coloured segmentation.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np
from PIL import Image

from services.data.images import check_pixels, decoding
from services.inference.errors import ImageTooLarge, NotAnImage
from services.labels import IGNORE_INDEX
from services.registry.classes import class_colour

# zlib level 1: a mask is mostly long runs, so it is nearly as small as at level 6 and much faster.
PNG_COMPRESS_LEVEL = 1
# Every mask's colours (R, G, B for indices 0..255): the classes' legend colours, ignore (255) white.
MASK_PALETTE = bytes(c for i in range(256) for c in (class_colour(i) if i != IGNORE_INDEX else (255, 255, 255)))


def decode_image(data: bytes | BinaryIO, max_pixels: int, name: str = "image") -> Image.Image:
    """Decode an uploaded image fully; its size is checked from the header before decoding.

    Raises NotAnImage (unrecognised, corrupt or truncated) or ImageTooLarge (over ``max_pixels``).
    """
    im = open_image(data, max_pixels, name)
    load_image(im, name)
    return im


def open_image(data: bytes | BinaryIO, max_pixels: int, name: str = "image") -> Image.Image:
    """Read an uploaded image's header only (its size is known, nothing decoded yet): bytes, or a
    seekable file that must stay open until ``load_image``. Raises NotAnImage or ImageTooLarge."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    if source.seek(0, io.SEEK_END) == 0:
        raise NotAnImage(f"{name!r} is empty: send an image file (PNG, JPEG, ...)")
    source.seek(0)
    with decoding(repr(name), not_image=NotAnImage, too_large=ImageTooLarge):
        im = Image.open(source)
        check_pixels(repr(name), *im.size, max_pixels, ImageTooLarge)
    return im


def load_image(im: Image.Image, name: str = "image") -> None:
    """Decode an image ``open_image`` returned."""
    with decoding(repr(name), not_image=NotAnImage, too_large=ImageTooLarge):
        im.load()


def encode_mask_png(mask: np.ndarray) -> bytes:
    """uint8 [H, W] of global class indices -> PNG bytes (palette mode, values = indices)."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"a mask is uint8 [H, W], got {mask.dtype} {list(mask.shape)}")
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    im.putpalette(MASK_PALETTE)
    out = io.BytesIO()
    im.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


def class_pixel_counts(mask: np.ndarray, names: Mapping[int, str]) -> dict[str, int]:
    """{class name: pixel count} for the classes present in ``mask`` (uint8 [H, W]), by index."""
    counts = np.bincount(mask.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    unknown = [int(i) for i in present if int(i) not in names]
    if unknown:
        raise ValueError(f"mask holds values {unknown} that are not classes of the model")
    return {names[int(i)]: int(counts[i]) for i in present}
