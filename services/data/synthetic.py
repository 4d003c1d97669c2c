"""A generated dataset of coloured shapes on noise, in the directory layout, for tests and demos.

Class 0 is background (the noise); classes 1.. are shapes, each with its own shape and hue
(jittered), so that a small network learns them in seconds on a CPU. Which classes an image
shows is set by ``compositions`` (cycled over the images), which lets a test decide exactly
which images an incremental step may use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("square", "disc", "triangle", "bar")
# Distinct base colours (RGB) so a class is recognisable from colour and shape alike.
_COLOURS = ((220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40))


def write_shapes_dataset(
    root: str | Path,
    splits: Mapping[str, int],
    *,
    size: int = 64,
    num_shapes: int = 3,
    compositions: Mapping[str, Sequence[Sequence[int]]] | None = None,
    seed: int = 0,
) -> Path:
    """Write ``{split}/images/*.png``, ``{split}/masks/*.png`` and ``classes.json`` under ``root``.

    ``splits``: images per split. ``compositions[split]``: the class sets (1..num_shapes) drawn
    in successive images, cycled; default: every image shows every shape. Returns ``root``.
    """
    if not 1 <= num_shapes <= len(SHAPES):
        raise ValueError(f"num_shapes must be in 1..{len(SHAPES)}, got {num_shapes}")
    root = Path(root)
    names = {"0": "background", **{str(i + 1): SHAPES[i] for i in range(num_shapes)}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(names, indent=1))
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        comps = (compositions or {}).get(split) or [range(1, num_shapes + 1)]
        for c in (c for comp in comps for c in comp):
            if not 1 <= c <= num_shapes:
                raise ValueError(f"composition for {split!r} names class {c}, outside 1..{num_shapes}")
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = draw_shapes_image(size, list(comps[i % len(comps)]), rng)
            image.save(root / split / "images" / f"{split}_{i:04d}.png")
            mask.save(root / split / "masks" / f"{split}_{i:04d}.png")
    return root


def draw_shapes_image(size: int, classes: Sequence[int], rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """One RGB image of noise with one shape per class in ``classes``, and its index mask (L)."""
    noise = rng.integers(60, 190, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    mask = Image.new("L", (size, size), 0)
    draw_img, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for c in rng.permutation(list(classes)):
        extent = int(rng.integers(size * 3 // 10, size * 5 // 10))
        x0, y0 = (int(v) for v in rng.integers(0, size - extent, size=2))
        colour = tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255)) for v in _COLOURS[int(c) - 1])
        _draw(draw_img, SHAPES[int(c) - 1], x0, y0, extent, colour)
        _draw(draw_mask, SHAPES[int(c) - 1], x0, y0, extent, int(c))
    return image, mask


def _draw(draw: ImageDraw.ImageDraw, shape: str, x0: int, y0: int, e: int, fill) -> None:
    box = (x0, y0, x0 + e - 1, y0 + e - 1)
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x0, y0 + e - 1), (x0 + e - 1, y0 + e - 1), (x0 + e // 2, y0)], fill=fill)
    else:  # bar: a thick horizontal stripe across the box
        draw.rectangle((x0, y0 + e // 3, x0 + e - 1, y0 + 2 * e // 3), fill=fill)
