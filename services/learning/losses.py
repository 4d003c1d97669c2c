"""Losses for class-incremental segmentation, as pure functions.

Logits arrive at label resolution: [N, C, H, W] with labels [N, H, W] (255 = ignore). The
teacher's tensors (``old_*``) are detached inside every loss, so gradients reach the new model
only. Everything is computed in float32, whatever precision autocast produced the logits in.

Sources: ILT = Michieli & Zanuttigh (ICCVW 2019, CVIU 2021); MiB = Cermelli et al. (CVPR 2020)
and its reference code (github.com/fcdl94/MiB, ``utils/loss.py``), whose differences from the
functions here are noted in each docstring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from services.labels import IGNORE_INDEX


def cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """L_CE: pixel cross-entropy averaged over the labelled pixels.

    logits [N, C, H, W], labels [N, H, W] long -> scalar. A batch with no labelled pixel gives
    0 (still attached to the graph) instead of PyTorch's NaN, so one all-void batch cannot
    poison the weights.
    """
    _check_labels(logits, labels)
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    return total / _labelled(labels, ignore_index)


def output_distillation(new_logits: Tensor, old_logits: Tensor, *, form: str = "paper") -> Tensor:
    """L'_D, ILT eq. 3 (the paper's form): distillation on the output layer.

    new_logits [N, Cn, H, W], old_logits [N, Co, H, W] with Co <= Cn -> scalar:
        -mean over the N*H*W pixels of sum_{c < Co} softmax(old)[c] * log_softmax(new)[c],
    where the new model's log-softmax runs over ALL its Cn channels, so probability mass moved
    to the new classes is penalised too. MiB's re-implementation (``KnowledgeDistillationLoss``)
    instead takes the log-softmax over the first Co channels only and averages over the Co
    classes rather than summing; its lambda (100) is tuned for that scale.
    ``form="mib"`` computes that variant: -mean over pixels of (1/Co) sum_{c < Co} softmax(old)[c]
    * log_softmax(new[:, :Co])[c]. Because it ignores the new channels, a large lambda keeps the
    old classes without stopping the new ones from growing on pixels the old model called
    background, which matters when old classes are labelled background in a step ("drop").
    Every pixel counts, labelled or not: the teacher needs no labels.
    """
    c_old = _check_teacher_shapes(new_logits, old_logits)
    q = torch.softmax(old_logits.detach().float(), dim=1)
    if form == "paper":
        log_p = torch.log_softmax(new_logits.float(), dim=1)[:, :c_old]
        return -(q * log_p).sum(dim=1).mean()
    if form == "mib":
        log_p = torch.log_softmax(new_logits.float()[:, :c_old], dim=1)
        return -(q * log_p).mean(dim=1).mean()
    raise ValueError(f"output distillation form must be 'paper' or 'mib', got {form!r}")


def feature_distillation(new_features: Tensor, old_features: Tensor) -> Tensor:
    """L'_E, ILT eq. 4: mean squared error between the encoders' outputs.

    new_features, old_features [N, F, h, w] (same shape) -> scalar, the mean over all
    N*F*h*w elements (as ``nn.MSELoss``, which both ILT's and MiB's code use).
    """
    if new_features.shape != old_features.shape:
        raise ValueError(
            f"feature distillation needs equal shapes, got new {tuple(new_features.shape)} "
            f"and old {tuple(old_features.shape)}"
        )
    return F.mse_loss(new_features.float(), old_features.detach().float())


def unbiased_cross_entropy(
    logits: Tensor, labels: Tensor, old_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """MiB's unbiased cross-entropy.

    logits [N, C, H, W], labels [N, H, W] long, old_classes = number of old channels counting
    background (1 <= old_classes < C) -> scalar, the mean over labelled pixels.
    A pixel labelled background may really show an old class, so its "background" probability
    is the sum over background and all old classes: log p = logsumexp(logits[:, :old_classes])
    - logsumexp(logits). Labels of old classes (0 < label < old_classes) count as background,
    as in MiB. New classes use their ordinary log-softmax over all C channels.
    Same values as MiB's ``UnbiasedCrossEntropy``; differences: a batch without labelled pixels
    gives 0 instead of NaN, and the math runs in float32.
    """
    _check_labels(logits, labels)
    n_classes = logits.shape[1]
    if not 1 <= old_classes < n_classes:
        raise ValueError(f"old_classes must be in [1, {n_classes}) for {n_classes} channels, got {old_classes}")
    logits = logits.float()
    log_norm = torch.logsumexp(logits, dim=1, keepdim=True)  # [N, 1, H, W]
    log_bg = torch.logsumexp(logits[:, :old_classes], dim=1, keepdim=True) - log_norm  # [N, 1, H, W]
    log_new = logits[:, old_classes:] - log_norm  # [N, C - old_classes, H, W]
    log_probs = torch.cat([log_bg, log_new], dim=1)  # channel 0 = bg-or-old, then the new classes
    # Re-index labels onto those channels: old (incl. background) -> 0, new class c -> c - old + 1.
    target = torch.where(labels < old_classes, torch.zeros_like(labels), labels - old_classes + 1)
    target = torch.where(labels == ignore_index, labels, target)
    total = F.nll_loss(log_probs, target, ignore_index=ignore_index, reduction="sum")
    return total / _labelled(labels, ignore_index)


def unbiased_distillation(new_logits: Tensor, old_logits: Tensor, *, class_mean: bool = True) -> Tensor:
    """MiB's unbiased knowledge distillation.

    new_logits [N, Cn, H, W], old_logits [N, Co, H, W] with Co <= Cn -> scalar.
    The old model's background stands for background or any new class, so its probability is
    matched to the new model's background + new-class probabilities:
        log p_bg = logsumexp(new[:, [0, Co..Cn-1]]) - logsumexp(new), log p_c = log_softmax(new)[c],
        loss = -mean over pixels of (q[0] * log p_bg + sum_{0 < c < Co} q[c] * log p_c) / Z,
    with q = softmax(old). Z = Co when ``class_mean`` (MiB's code, ``UnbiasedKnowledgeDistillation
    Loss``, whose published lambda = 10 goes with that scale), Z = 1 for the MiB paper's eq. 5.
    Differences from MiB's code: Cn == Co is allowed (its ``[1:-new_cl]`` slice is empty then),
    no temperature-like ``alpha`` on the teacher's logits (MiB's default 1 is what we do), float32.
    """
    c_old = _check_teacher_shapes(new_logits, old_logits)
    new_logits = new_logits.float()
    q = torch.softmax(old_logits.detach().float(), dim=1)  # [N, Co, H, W]
    log_norm = torch.logsumexp(new_logits, dim=1)  # [N, H, W]
    bg_or_new = torch.cat([new_logits[:, :1], new_logits[:, c_old:]], dim=1)
    log_bg = torch.logsumexp(bg_or_new, dim=1) - log_norm  # [N, H, W]
    log_old = new_logits[:, 1:c_old] - log_norm.unsqueeze(1)  # [N, Co - 1, H, W]
    per_pixel = q[:, 0] * log_bg + (q[:, 1:] * log_old).sum(dim=1)
    loss = -per_pixel.mean()
    return loss / c_old if class_mean else loss


def _labelled(labels: Tensor, ignore_index: int) -> Tensor:
    """The number of labelled pixels, at least 1 (an all-void batch then gives loss 0, not NaN);
    a tensor, so that no device sync is needed."""
    return (labels != ignore_index).sum().clamp(min=1)


def _check_labels(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 4 or labels.dim() != 3:
        raise ValueError(
            f"expected logits [N, C, H, W] and labels [N, H, W], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.shape[0] != labels.shape[0] or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in batch or spatial size: "
            "upsample the logits to the label size first"
        )
    if labels.dtype != torch.long:
        raise ValueError(f"labels must be torch.long, got {labels.dtype}")


def _check_teacher_shapes(new_logits: Tensor, old_logits: Tensor) -> int:
    """The number of old channels, after checking the two logit tensors fit together."""
    if new_logits.dim() != 4 or old_logits.dim() != 4:
        raise ValueError(
            f"expected [N, C, H, W] logits, got new {tuple(new_logits.shape)} and old {tuple(old_logits.shape)}"
        )
    n, c_new, h, w = new_logits.shape
    c_old = old_logits.shape[1]
    if old_logits.shape[0] != n or old_logits.shape[2:] != (h, w):
        raise ValueError(
            f"new logits {tuple(new_logits.shape)} and old logits {tuple(old_logits.shape)} differ in batch or spatial size"
        )
    if not 1 <= c_old <= c_new:
        raise ValueError(f"the old model has {c_old} channels, the new one {c_new}: the old must be 1..new")
    return c_old
