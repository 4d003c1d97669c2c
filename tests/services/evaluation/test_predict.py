"""predict_logits(): the forward evaluation and serving share. Padded to the stride, the padding
cropped off, logits upsampled to the resolution asked for; one image never sways another."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from services.data.transforms import STRIDE, eval_preprocess
from services.evaluation.predict import predict_logits, same_size_groups
from services.learning.names import ARCHITECTURES
from services.learning.zoo import build_model
from tests.services.evaluation.test_evaluate import ReadChannelModel


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architectures_stride_divides_the_padding_stride(arch: str) -> None:
    """A padded input is covered exactly by every feature map of every zoo network."""
    torch.manual_seed(0)
    model = build_model(arch, 2).eval()
    h, w = 2 * STRIDE, 3 * STRIDE
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, h, w))
    for name, f in features.items():
        fh, fw = f.shape[-2:]
        assert h % fh == 0 and w % fw == 0 and h // fh == w // fw, (name, tuple(f.shape))
        assert STRIDE % (h // fh) == 0, f"{arch}'s {name!r} is at stride {h // fh}, more than {STRIDE}"


def test_logits_are_cropped_and_upsampled_to_the_size_asked() -> None:
    # ReadChannelModel: logits = one-hot of the first channel; the padding reads class 0.
    x = torch.tensor([[0.0, 1.0]]).expand(3, 1, 2).unsqueeze(0)  # [1, 3, 1, 2]: classes 0 | 1
    (logits,) = predict_logits(ReadChannelModel(2), x, [(2, 4)])
    assert logits.shape == (2, 2, 4)
    assert logits.argmax(0).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]  # bilinear from 1x2, not squashed
    expected = F.interpolate(F.one_hot(torch.tensor([[[0, 1]]]), 2).permute(0, 3, 1, 2).float(), size=(2, 4),
                             mode="bilinear", align_corners=False)[0]
    assert torch.allclose(logits, expected)
    (same,) = predict_logits(ReadChannelModel(2), x, [(1, 2)])  # at its own size: the cropped logits as they are
    assert same.argmax(0).tolist() == [[0, 1]]


def test_each_image_gets_its_own_size() -> None:
    x = torch.zeros(3, 3, 8, 12)
    out = predict_logits(ReadChannelModel(3), x, [(8, 12), (16, 24), (5, 7)])  # upsampled as it is iterated
    assert [tuple(o.shape) for o in out] == [(3, 8, 12), (3, 16, 24), (3, 5, 7)]
    with pytest.raises(ValueError, match="N sizes"):
        predict_logits(ReadChannelModel(3), x, [(8, 12)])


def test_padding_barely_changes_the_prediction_of_the_image() -> None:
    """An eval-mode network on the image alone and on it padded to the stride agree on the image."""
    torch.manual_seed(0)
    model = build_model("lraspp_mobilenet_v3_large", 4).eval()
    x = eval_preprocess(_image(101, 75, seed=1), 50)  # [3, 50, 67]: not a multiple of the stride
    assert x.shape[-1] % STRIDE and x.shape[-2] % STRIDE
    with torch.no_grad():
        alone = model(x.unsqueeze(0)).logits[0]
        (padded,) = predict_logits(model, x.unsqueeze(0), [tuple(x.shape[-2:])])
    assert (alone.argmax(0) == padded.argmax(0)).float().mean() > 0.95
    assert (alone - padded).abs().max() < 0.1 * alone.abs().max()


def test_an_image_does_not_depend_on_the_others_in_its_batch() -> None:
    torch.manual_seed(0)
    model = build_model("lraspp_mobilenet_v3_large", 4).eval()
    xs = torch.stack([eval_preprocess(_image(90, 60, seed=s), 40) for s in range(3)])
    with torch.no_grad():
        together = list(predict_logits(model, xs, [(60, 90)] * 3))
        alone = [next(predict_logits(model, x.unsqueeze(0), [(60, 90)])) for x in xs]
    for a, b in zip(together, alone):
        assert torch.allclose(a, b, atol=1e-4)


def test_same_size_groups_keep_first_appearance_order() -> None:
    shapes = [(3, 8, 8), (3, 8, 9), (3, 8, 8), (3, 4, 4), (3, 8, 9)]
    assert same_size_groups(shapes) == [[0, 2], [1, 4], [3]]
    assert same_size_groups([]) == []
