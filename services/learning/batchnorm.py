"""BatchNorm running statistics: re-estimated after training ("precise BN"), or frozen.

Why: the running statistics are an exponential average with a small momentum (MobileNetV3's is
0.01), so after a few hundred steps they still describe the early weights, not the trained
ones, and the model scores far below what it learned. Re-estimating them with a plain average
over one pass of the training images, with the weights fixed, removes that lag (Wu & Johnson,
"Rethinking 'Batch' in BatchNorm", 2021, call it precise BN).

Policies (``TrainConfig.batchnorm``; see docs/method-engine.md for the measurements):
- ``recalibrate``: statistics follow training, then are re-estimated over the step's images;
- ``update``: statistics follow training with the layers' own momentum (torchvision's default);
- ``frozen``: in an incremental step, every BatchNorm keeps the parent's statistics (eval mode
  while training); a first step, which has no parent, recalibrates.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module, *, training_only: bool = False) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``model`` (only those in training mode with ``training_only``)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and (m.training or not training_only)]


def freeze_statistics(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode: normalise with, and keep, the running statistics."""
    for layer in batchnorm_layers(model):
        layer.eval()


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[Tensor], *, device: torch.device | str = "cpu") -> int:
    """Re-estimate the running statistics of the BatchNorm layers that are in training mode.

    The model must be in the mode it trained in (frozen layers in eval mode keep theirs).
    batches: images [N, 3, H, W] (N > 1). Each layer's statistics become the plain average over
    the batches (momentum None) of the per-batch statistics. Returns the number of images used;
    with none, nothing changes.
    """
    layers = batchnorm_layers(model, training_only=True)
    if not layers:
        return 0
    saved = [(layer, layer.momentum, layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: every batch weighs the same
    seen = 0
    try:
        for images in batches:
            model(images.to(device))
            seen += images.shape[0]
    finally:
        for layer, momentum, mean, var in saved:
            layer.momentum = momentum
            if not seen:  # nothing was averaged: keep the statistics the layer had
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
    return seen
