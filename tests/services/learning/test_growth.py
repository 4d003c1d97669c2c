"""Classifier growth keeps the old classes' outputs and initialises the new rows as asked."""

from __future__ import annotations

import math

import pytest
import torch

from services.learning.growth import classifier_convs, grow_classifier
from services.learning.zoo import SegModel, build_model

# LR-ASPP (two summed classifier convs) and DeepLab (one conv at the end of a Sequential).
ARCHS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")


def logits(model: SegModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).logits


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("arch", ARCHS)
def test_random_growth_keeps_the_old_logits(arch: str, batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    old = build_model(arch, 4)
    before = logits(old, batch)
    grown = grow_classifier(old, 3)
    after = logits(grown, batch)
    assert grown.num_classes == 7 and after.shape == (2, 7, 32, 32)
    torch.testing.assert_close(after[:, :4], before, rtol=0, atol=1e-5)
    # The new rows are not copies of old ones, and the original model is left alone.
    assert not torch.allclose(after[:, 4], after[:, 0])
    assert old.num_classes == 4 and logits(old, batch).shape[1] == 4
    for parent, name in classifier_convs(grown):
        conv = getattr(parent, name)
        assert conv.weight.shape[0] == 7 and conv.bias.shape == (7,)


def test_random_growth_follows_the_generator() -> None:
    old = build_model(ARCHS[0], 3)
    a = grow_classifier(old, 2, generator=torch.Generator().manual_seed(5))
    b = grow_classifier(old, 2, generator=torch.Generator().manual_seed(5))
    for (pa, na), (pb, nb) in zip(classifier_convs(a), classifier_convs(b)):
        assert torch.equal(getattr(pa, na).weight, getattr(pb, nb).weight)


@pytest.mark.parametrize("arch", ARCHS)
def test_mib_growth_splits_the_background_probability(arch: str, batch: torch.Tensor) -> None:
    torch.manual_seed(1)
    old = build_model(arch, 4)
    num_new = 3
    p_old = logits(old, batch).softmax(dim=1)
    grown = grow_classifier(old, num_new, init="mib")
    z = logits(grown, batch)
    p_new = z.softmax(dim=1)
    tol = {"rtol": 1e-4, "atol": 1e-6}
    # Old foreground classes keep their probabilities...
    torch.testing.assert_close(p_new[:, 1:4], p_old[:, 1:4], **tol)
    # ...and background plus the new classes share the old background probability equally.
    share = p_old[:, 0] / (num_new + 1)
    for c in (0, 4, 5, 6):
        torch.testing.assert_close(p_new[:, c], share, **tol)
    # In logits: each new class starts at the old background logit minus log(num_new + 1).
    z_old = logits(old, batch)
    torch.testing.assert_close(z[:, 4], z_old[:, 0] - math.log(num_new + 1), rtol=0, atol=1e-4)


def test_lraspp_mib_growth_shifts_the_summed_bias_once() -> None:
    old = build_model("lraspp_mobilenet_v3_large", 2)
    grown = grow_classifier(old, 1, init="mib")
    head, old_head = grown.classifier, old.classifier
    bias = head.low_classifier.bias + head.high_classifier.bias
    old_bias = old_head.low_classifier.bias + old_head.high_classifier.bias
    torch.testing.assert_close(bias[2], old_bias[0] - math.log(2))
    torch.testing.assert_close(head.low_classifier.weight[2], old_head.low_classifier.weight[0])
    torch.testing.assert_close(head.high_classifier.weight[2], old_head.high_classifier.weight[0])


def test_growth_arguments_are_checked() -> None:
    model = build_model(ARCHS[0], 2)
    with pytest.raises(ValueError, match="num_new must be a positive int"):
        grow_classifier(model, 0)
    with pytest.raises(ValueError, match="unknown classifier init 'zeros'"):
        grow_classifier(model, 1, init="zeros")  # type: ignore[arg-type]
