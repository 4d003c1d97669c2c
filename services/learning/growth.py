"""Classifier growth: a step's model is the previous one with more output channels.

``grow_classifier`` deep-copies the model and widens its final 1x1 classifier conv(s) from C_old
to C_old + num_new output channels. Old rows (weights and biases) are copied; new rows are:

- ``"random"``: drawn like a fresh ``nn.Conv2d`` (uniform in +-1/sqrt(fan_in)). The old logits
  of the grown model equal the old model's.
- ``"mib"`` (Cermelli et al., CVPR 2020): weights = the background row, bias = background bias
  - log(num_new + 1). As in MiB's code (``init_new_classifier``), the background bias gets the
  same shift, so background and the num_new new classes each start with exactly 1/(num_new + 1)
  of the old background probability, and every old non-background class keeps its probability
  and logit. (Shifting only the new rows would make background + new classes take more than
  the old background probability, shrinking the old classes' probabilities.)

LR-ASPP has two classifier convs whose outputs are summed (``low_classifier`` on the stride-8
features and ``high_classifier`` on the pooled stride-16 ones): both are widened, and the
log(num_new + 1) shift is applied once (to ``high_classifier``) so that the sum is right.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import nn

from services.learning.zoo import SegModel

GrowthInit = Literal["random", "mib"]
GROWTH_INITS: tuple[str, ...] = ("random", "mib")


def classifier_convs(model: SegModel) -> list[tuple[nn.Module, str]]:
    """(parent module, attribute) of each final classifier conv; the bias shift goes to the last."""
    head = model.classifier
    if model.arch.startswith("lraspp"):
        return [(head, "low_classifier"), (head, "high_classifier")]
    # DeepLabHead and FCNHead are nn.Sequential ending with the 1x1 classifier conv.
    return [(head, str(len(head) - 1))]


def grow_classifier(
    model: SegModel,
    num_new: int,
    init: GrowthInit = "random",
    *,
    generator: torch.Generator | None = None,
) -> SegModel:
    """A new model (deep copy of ``model``) with ``num_new`` more output channels.

    generator: draws the random new rows (``init="random"``); the global RNG when None.
    """
    if isinstance(num_new, bool) or not isinstance(num_new, int) or num_new < 1:
        raise ValueError(f"num_new must be a positive int, got {num_new!r}")
    if init not in GROWTH_INITS:
        raise ValueError(f"unknown classifier init {init!r}; choose one of {', '.join(GROWTH_INITS)}")
    grown = copy.deepcopy(model)
    convs = classifier_convs(grown)
    for i, (parent, name) in enumerate(convs):
        old = getattr(parent, name)
        shift_bias = init == "mib" and i == len(convs) - 1
        setattr(parent, name, _widened(old, num_new, init, shift_bias, generator))
    grown.num_classes = model.num_classes + num_new
    return grown


@torch.no_grad()
def _widened(
    old: nn.Conv2d, num_new: int, init: GrowthInit, shift_bias: bool, generator: torch.Generator | None
) -> nn.Conv2d:
    """A copy of ``old`` with ``num_new`` more output rows, initialised by ``init``."""
    if not isinstance(old, nn.Conv2d) or old.bias is None:
        raise TypeError(f"expected a classifier nn.Conv2d with bias, found {type(old).__name__}")
    c_old = old.out_channels
    new = nn.Conv2d(
        old.in_channels, c_old + num_new, old.kernel_size, stride=old.stride, padding=old.padding,
        dilation=old.dilation, groups=old.groups, bias=True,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    new.weight[:c_old] = old.weight
    new.bias[:c_old] = old.bias
    if init == "mib":
        new.weight[c_old:] = old.weight[0]
        new.bias[c_old:] = old.bias[0]
        if shift_bias:
            # Background and each new class share the old background probability equally.
            shift = math.log(num_new + 1)
            new.bias[c_old:] -= shift
            new.bias[0] -= shift
    else:
        # nn.Conv2d's default init (kaiming_uniform with a=sqrt(5)) is uniform in +-1/sqrt(fan_in).
        fan_in = old.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        shape_w = (num_new, *old.weight.shape[1:])
        new.weight[c_old:] = _uniform(shape_w, bound, generator).to(new.weight)
        new.bias[c_old:] = _uniform((num_new,), bound, generator).to(new.bias)
    return new


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound
