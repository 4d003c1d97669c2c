"""Augmentation keeps image and mask aligned; evaluation preprocessing is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from services.data.transforms import (
    EvalTransform,
    TrainTransform,
    denormalize,
    eval_mask,
    eval_preprocess,
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
    x = eval_preprocess(mean_colour, (20, 40))
    assert x.shape == (3, 20, 40)
    assert x.abs().max() < 0.01
    white = eval_preprocess(Image.new("RGB", (8, 8), (255, 255, 255)), 4)
    assert torch.allclose(white[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))


def test_eval_transform_is_deterministic_and_nearest() -> None:
    image, mask = _blocky_pair()
    t = EvalTransform(24)
    (x1, m1), (x2, m2) = t(image, mask), t(image, mask)
    assert torch.equal(x1, x2) and torch.equal(m1, m2)
    assert set(m1.unique().tolist()) <= set(np.unique(np.asarray(mask)).tolist())
    assert torch.equal(eval_mask(mask, 24), m1)
