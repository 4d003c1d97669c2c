"""Augmentation keeps image and mask aligned; evaluation preprocessing is deterministic; both keep
the aspect ratio (``size`` is the shorter side)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from services.data.transforms import (
    MAX_ASPECT,
    STRIDE,
    EvalTransform,
    TrainTransform,
    crop_padding,
    denormalize,
    eval_preprocess,
    pad_to_stride,
    scaled_hw,
)

STEP = 25  # grey level per class: image value = class * STEP


def _blocky_pair(size: int = 64, block: int = 16, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """A mask of random classes in blocks, and an image whose grey level encodes the class."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 10, size=(size // block, size // block)).astype(np.uint8)
    mask = np.kron(classes, np.ones((block, block), np.uint8))
    image = np.repeat((mask * STEP)[..., None], 3, axis=2)
    return Image.fromarray(image), Image.fromarray(mask)


def _interior(mask: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Pixels whose k x k neighbourhood holds one class (and no void): bool [H, W]."""
    m = mask.float()[None, None]
    hi = F.max_pool2d(m, k, stride=1, padding=k // 2)
    lo = -F.max_pool2d(-m, k, stride=1, padding=k // 2)
    return ((hi == lo) & (m != 255))[0, 0]


def _decoded_classes(image: torch.Tensor) -> torch.Tensor:
    grey = denormalize(image)[0] * 255
    return torch.round(grey / STEP).long()


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_keeps_image_and_mask_aligned(seed: int) -> None:
    image, mask = _blocky_pair(seed=seed)
    t = TrainTransform(48, generator=torch.Generator().manual_seed(seed))
    img, msk = t(image, mask)
    assert img.shape == (3, 48, 48) and img.dtype == torch.float32
    assert msk.shape == (48, 48) and msk.dtype == torch.long
    assert set(msk.unique().tolist()) <= set(range(10)) | {255}  # NEAREST: no blended labels
    inside = _interior(msk)
    assert inside.sum() > 100
    agree = (_decoded_classes(img)[inside] == msk[inside]).float().mean()
    assert agree > 0.98, f"image and mask disagree on {1 - agree:.1%} of interior pixels"
    # A misaligned pair (the mask flipped alone) would not pass the same check.
    flipped = msk.flip(-1)
    inside_f = _interior(flipped) & inside
    if inside_f.sum() > 100:
        assert (_decoded_classes(img)[inside_f] == flipped[inside_f]).float().mean() < 0.9


def test_padding_is_void_in_the_mask_and_zero_in_the_image() -> None:
    image, mask = _blocky_pair(size=32, block=8)
    img, msk = TrainTransform(32, scale=(0.5, 0.5), flip_p=0.0, generator=torch.Generator().manual_seed(0))(image, mask)
    pad = msk == 255
    assert pad.float().mean() == pytest.approx(0.75)  # a 16x16 picture in a 32x32 crop
    assert torch.allclose(denormalize(img)[:, pad], torch.zeros(1), atol=1e-5)
    assert not pad[:16, :16].any()


def test_flip_and_unit_scale_reproduce_the_input_mirrored() -> None:
    image, mask = _blocky_pair(size=32, block=8)
    _, msk = TrainTransform(32, scale=(1.0, 1.0), flip_p=1.0)(image, mask)
    assert torch.equal(msk, torch.from_numpy(np.array(mask)).long().flip(-1))


def test_train_transform_is_seedable() -> None:
    image, mask = _blocky_pair()
    a = TrainTransform(40, generator=torch.Generator().manual_seed(3))(image, mask)
    b = TrainTransform(40, generator=torch.Generator().manual_seed(3))(image, mask)
    c = [TrainTransform(40, generator=torch.Generator().manual_seed(s))(image, mask)[1] for s in range(4, 8)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert any(not torch.equal(a[1], m) for m in c)
    torch.manual_seed(9)
    d = TrainTransform(40)(image, mask)  # no generator: torch's global RNG
    torch.manual_seed(9)
    assert torch.equal(d[1], TrainTransform(40)(image, mask)[1])


def test_bad_arguments_are_refused() -> None:
    image, mask = _blocky_pair()
    with pytest.raises(ValueError, match="mask is"):
        TrainTransform(32)(image, mask.resize((10, 10)))
    with pytest.raises(ValueError, match="scale range"):
        TrainTransform(32, scale=(2.0, 1.0))
    with pytest.raises(ValueError, match="image size"):
        EvalTransform(0)


def test_eval_preprocess_resizes_and_normalises() -> None:
    mean_colour = Image.new("RGB", (50, 30), (124, 116, 104))  # ImageNet mean * 255
    x = eval_preprocess(mean_colour, 20)
    assert x.shape == (3, 20, 33)  # shorter side 20, 50 * 20 / 30 = 33.3 wide
    assert x.abs().max() < 0.01
    white = eval_preprocess(Image.new("RGB", (8, 8), (255, 255, 255)), 4)
    assert torch.allclose(white[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))


@pytest.mark.parametrize("width, height, size, expected", [
    (480, 360, 128, (128, 171)),  # a CamVid frame: no longer squashed to 128 x 128
    (360, 480, 128, (171, 128)),  # portrait
    (64, 64, 32, (32, 32)),
    (60, 10, 20, (20, 120)),  # upscaled when smaller
    (33, 47, 33, (47, 33)),  # already there: unchanged
])
def test_eval_preprocess_keeps_the_aspect_ratio(width: int, height: int, size: int, expected: tuple[int, int]) -> None:
    assert scaled_hw(height, width, size) == expected
    x = eval_preprocess(Image.new("RGB", (width, height)), size)
    assert x.shape == (3, *expected) and min(x.shape[1:]) == size


def test_a_thinner_image_than_max_aspect_is_held_at_max_aspect() -> None:
    """A 1 x 40000 strip is not grown into a 512 x 20 million image: its longer side stops at
    MAX_ASPECT x 512, the aspect ratio still kept."""
    assert scaled_hw(1, 40000, 512) == (1, MAX_ASPECT * 512)
    assert scaled_hw(40000, 1, 512) == (MAX_ASPECT * 512, 1)
    assert scaled_hw(100, 100 * MAX_ASPECT, 50) == (50, 50 * MAX_ASPECT)  # at the limit: the shorter side rules
    assert scaled_hw(10, 1000, 20) == (2, 20 * MAX_ASPECT)
    x = eval_preprocess(Image.new("RGB", (2000, 10)), 16)
    assert x.shape == (3, 1, 16 * MAX_ASPECT)


def test_eval_preprocess_takes_the_shorter_side_only() -> None:
    with pytest.raises(TypeError, match="shorter side"):
        eval_preprocess(Image.new("RGB", (8, 8)), (4, 6))  # type: ignore[arg-type]


def test_eval_transform_keeps_the_mask_at_its_own_resolution() -> None:
    image, mask = _blocky_pair()
    image, mask = image.resize((64, 40)), mask.resize((64, 40), Image.NEAREST)
    t = EvalTransform(24)
    (x1, m1), (x2, m2) = t(image, mask), t(image, mask)
    assert torch.equal(x1, x2) and torch.equal(m1, m2)
    assert x1.shape == (3, 24, 38)  # shorter side 24, aspect kept
    assert m1.dtype == torch.long and torch.equal(m1, torch.from_numpy(np.array(mask)).long())  # untouched
    with pytest.raises(ValueError, match="mask is"):
        t(image, mask.resize((10, 10)))


def test_pad_to_stride_pads_bottom_right_and_crop_padding_undoes_it() -> None:
    x = torch.randn(2, 3, 20, 33)
    padded = pad_to_stride(x)
    assert padded.shape == (2, 3, -(-20 // STRIDE) * STRIDE, -(-33 // STRIDE) * STRIDE)
    assert padded.shape[-2] % STRIDE == 0 and padded.shape[-1] % STRIDE == 0
    assert torch.equal(crop_padding(padded, (20, 33)), x)
    assert padded[..., 20:, :].abs().sum() == 0 and padded[..., :, 33:].abs().sum() == 0
    exact = torch.randn(3, STRIDE, 2 * STRIDE)
    assert pad_to_stride(exact) is exact  # already a multiple: nothing to do
    assert pad_to_stride(torch.ones(1, 5, 7), stride=4, value=2.0)[0, 6, 7] == 2.0


def test_train_transform_keeps_the_aspect_ratio_and_crops_to_the_crop_size() -> None:
    """A 2:1 picture at unit scale: its shorter side becomes ``size``, its width twice that; a crop
    larger than it holds it whole (top left) with void around."""
    image, mask = _blocky_pair(size=64, block=8)
    image, mask = image.resize((120, 60)), mask.resize((120, 60), Image.NEAREST)
    img, msk = TrainTransform(30, scale=(1.0, 1.0), flip_p=0.0, crop=(40, 80))(image, mask)
    assert img.shape == (3, 40, 80) and msk.shape == (40, 80)
    picture = msk != 255
    assert picture[:30, :60].all() and not picture[30:].any() and not picture[:, 60:].any()
    assert torch.equal(msk[:30, :60], torch.from_numpy(np.array(mask.resize((60, 30), Image.NEAREST))).long())


@pytest.mark.parametrize("crop, expected", [(None, (24, 24)), (20, (20, 20)), ((16, 40), (16, 40))])
def test_train_transform_crop_sizes(crop, expected) -> None:
    image, mask = _blocky_pair()
    image, mask = image.resize((96, 48)), mask.resize((96, 48), Image.NEAREST)
    for seed in range(5):
        img, msk = TrainTransform(24, crop=crop, generator=torch.Generator().manual_seed(seed))(image, mask)
        assert img.shape == (3, *expected) and msk.shape == expected


def test_train_transform_scales_the_shorter_side() -> None:
    """s = 0.5 of size 40: a 100x50 picture becomes 40x20 in the (void-padded) 32x48 crop."""
    image, mask = _blocky_pair()
    image, mask = image.resize((100, 50)), mask.resize((100, 50), Image.NEAREST)
    _, msk = TrainTransform(40, scale=(0.5, 0.5), flip_p=0.0, crop=(32, 48))(image, mask)
    picture = msk != 255
    assert picture.sum() == 20 * 40 and picture[:20, :40].all()
