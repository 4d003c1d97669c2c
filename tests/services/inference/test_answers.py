"""services/inference/answers.py: per-class COCO RLE regions and the colour overlay, checked against
pycocotools' own decoder and the legend's colours."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from services.inference.answers import OVERLAY_ALPHA, class_regions, overlay_png
from services.registry.classes import class_colour

NAMES = {0: "background", 1: "cat", 2: "dog", 7: "bird"}


def sample_mask() -> np.ndarray:
    """11 x 17 (not square, so rows and columns cannot be confused): background, a cat box, a dog
    blob touching the right and bottom edges, a single bird pixel."""
    mask = np.zeros((11, 17), dtype=np.uint8)
    mask[2:5, 3:9] = 1
    mask[6:, 12:] = 2
    mask[8, 14] = 0
    mask[0, 16] = 7
    return mask


def test_regions_decode_to_each_class_and_tile_the_image():
    mask = sample_mask()
    regions = class_regions(mask, NAMES)
    assert [(r.index, r.name) for r in regions] == [(0, "background"), (1, "cat"), (2, "dog"), (7, "bird")]
    cover = np.zeros(mask.shape, dtype=int)
    for region in regions:
        binary = coco_mask.decode(region.rle)
        assert binary.shape == (11, 17) and np.array_equal(binary, (mask == region.index).astype(np.uint8))
        assert region.area == int(binary.sum()) == int(coco_mask.area(region.rle))
        cover += binary
    assert np.all(cover == 1)  # background included: every pixel in exactly one region


def test_regions_are_what_pycocotools_encodes_and_serialise_as_json():
    mask = sample_mask()
    for region in class_regions(mask, NAMES):
        expected = coco_mask.encode(np.asfortranarray(mask == region.index, dtype=np.uint8))
        assert region.rle == {"size": [11, 17], "counts": expected["counts"].decode("ascii")}
        assert json.loads(json.dumps(region.rle)) == region.rle


def test_bboxes_are_coco_x_y_width_height():
    bboxes = {r.name: r.bbox for r in class_regions(sample_mask(), NAMES)}
    assert bboxes == {"background": (0, 0, 17, 11), "cat": (3, 2, 6, 3), "dog": (12, 6, 5, 5), "bird": (16, 0, 1, 1)}


def test_one_class_everywhere_is_one_region():
    mask = np.full((4, 6), 2, dtype=np.uint8)
    [region] = class_regions(mask, NAMES)
    assert (region.name, region.area, region.bbox) == ("dog", 24, (0, 0, 6, 4))
    assert np.all(coco_mask.decode(region.rle) == 1)


def test_regions_refuse_values_that_are_not_classes_and_bad_masks():
    mask = sample_mask()
    mask[0, 0] = 9
    with pytest.raises(ValueError, match=r"values \[9\]"):
        class_regions(mask, NAMES)
    with pytest.raises(ValueError, match="uint8"):
        class_regions(sample_mask().astype(np.int32), NAMES)


def overlay_of(image: Image.Image, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    out = Image.open(io.BytesIO(overlay_png(image, mask, alpha)))
    assert out.format == "PNG" and out.mode == "RGB" and out.size == image.size
    return np.asarray(out)


def test_overlay_blends_each_pixel_with_its_class_colour():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (11, 17, 3), dtype=np.uint8)
    mask = sample_mask()
    for alpha in (OVERLAY_ALPHA, 0.3, 0.0, 1.0):
        out = overlay_of(Image.fromarray(pixels), mask, alpha)
        for index in NAMES:
            where = mask == index
            expected = np.rint(alpha * np.array(class_colour(index), dtype=float) + (1 - alpha) * pixels[where])
            assert np.array_equal(out[where], expected.astype(np.uint8)), (alpha, index)
    assert np.array_equal(overlay_of(Image.fromarray(pixels), mask, 0.0), pixels)


def test_overlay_by_hand():
    """cat (index 1) is (128, 0, 0): half of it and half of (10, 20, 31) is (69, 10, 15.5 -> 16)."""
    image = Image.new("RGB", (2, 1), (10, 20, 31))
    out = overlay_of(image, np.array([[1, 0]], dtype=np.uint8))
    assert class_colour(1) == (128, 0, 0)
    assert out.tolist() == [[[69, 10, 16], [5, 10, 16]]]  # 15.5 and 5.0, 15.5: halves round to even


def test_overlay_reads_greyscale_and_transparent_images_as_rgb():
    mask = np.full((3, 4), 2, dtype=np.uint8)
    grey = overlay_of(Image.new("L", (4, 3), 100), mask, 1.0)
    assert np.all(grey == class_colour(2))
    rgba = overlay_of(Image.new("RGBA", (4, 3), (40, 50, 60, 0)), mask, 0.0)
    assert np.all(rgba == (40, 50, 60))


def test_overlay_of_a_tall_image_blends_every_chunk(monkeypatch):
    """The blend runs in row chunks (here 4, 4 and 3 rows): every one is blended, the shorter last too."""
    import services.inference.answers as answers

    monkeypatch.setattr(answers, "_BLEND_CHUNK_PIXELS", 17 * 4)
    pixels = np.random.default_rng(4).integers(0, 256, (11, 17, 3), dtype=np.uint8)
    mask = sample_mask()
    colours = np.array([class_colour(int(i)) for i in mask.ravel()], dtype=float).reshape(11, 17, 3)
    expected = np.rint(OVERLAY_ALPHA * colours + (1 - OVERLAY_ALPHA) * pixels).astype(np.uint8)
    assert np.array_equal(overlay_of(Image.fromarray(pixels), mask), expected)


def test_overlay_refuses_a_mask_of_another_size_and_alpha_out_of_range():
    image = Image.new("RGB", (4, 3))
    with pytest.raises(ValueError, match="the mask is 3x4, the image 4x3"):
        overlay_png(image, np.zeros((4, 3), dtype=np.uint8))
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            overlay_png(image, np.zeros((3, 4), dtype=np.uint8), alpha)
