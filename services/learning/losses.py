"""Losses for class-incremental segmentation, as pure functions.

Logits arrive at label resolution: [N, C, H, W] with labels [N, H, W] (255 = ignore). The
teacher's tensors (``old_*``) are detached inside every loss, so gradients reach the new model
only. Everything is computed in float32, whatever precision autocast produced the logits in.

Sources: ILT = Michieli & Zanuttigh (ICCVW 2019, CVIU 2021); MiB = Cermelli et al. (CVPR 2020)
and its reference code (github.com/fcdl94/MiB, ``utils/loss.py``); PLOP = Douillard et al. (CVPR
2021) and its code (github.com/arthurdouillard/CVPR2021_PLOP at 4b4a060, ``train.py``, line numbers
cited as PLOP l. N); SSUL = Cha et al. (NeurIPS 2021) and its code (github.com/clovaai/SSUL at e08ee9c).
Differences from the reference code are noted in each docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from services.labels import IGNORE_INDEX


def cross_entropy(
    logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, *,
    class_weights: Tensor | None = None, image_weights: Tensor | None = None,
) -> Tensor:
    """L_CE: pixel cross-entropy averaged over the labelled pixels.

    logits [N, C, H, W], labels [N, H, W] long -> scalar. A batch with no labelled pixel gives
    0 (still attached to the graph) instead of PyTorch's NaN, so one all-void batch cannot
    poison the weights.
    class_weights [C]: pixel c's loss counts w_c times, and the mean divides by the sum of the
        labelled pixels' weights (``F.cross_entropy(weight=...)``'s rule).
    image_weights [N]: image n's pixel losses are multiplied by it, the divisor unchanged (PLOP's
        ``classif_adaptive_factor``).
    """
    _check_labels(logits, labels)
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")
    return _weighted_mean(per_pixel, labels, ignore_index, class_weights, image_weights)


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
    logits: Tensor, labels: Tensor, old_classes: int, ignore_index: int = IGNORE_INDEX, *,
    class_weights: Tensor | None = None,
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
    class_weights [C]: as in ``cross_entropy``, by each pixel's label.
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
    per_pixel = F.nll_loss(log_probs, target, ignore_index=ignore_index, reduction="none")
    return _weighted_mean(per_pixel, labels, ignore_index, class_weights, None)


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


def normalized_entropy(logits: Tensor) -> Tensor:
    """The Shannon entropy of softmax(logits) over the channels divided by log(C), so in [0, 1].

    logits [N, C, H, W] -> [N, H, W] float32; C == 1 gives zeros. Nothing is detached (detach a
    teacher's logits first; ``pseudo_label`` does).
    PLOP's ``entropy`` (PLOP l. 701-713) averages p log p over the channels instead of summing and
    its callers divide once more by log(all classes so far) (l. 256, 514), so PLOP's values are
    these divided by C * log(C_total); only ``entropy_thresholds``' floor depends on that scale.
    """
    if logits.dim() != 4:
        raise ValueError(f"expected logits [N, C, H, W], got {tuple(logits.shape)}")
    log_p = torch.log_softmax(logits.float(), dim=1)
    if logits.shape[1] == 1:
        return torch.zeros_like(log_p[:, 0])
    return -(log_p.exp() * log_p).sum(dim=1) / math.log(logits.shape[1])


def entropy_thresholds(entropy: Tensor, predicted: Tensor, num_classes: int, *, min_threshold: float = 0.001) -> Tensor:
    """PLOP's per-class entropy thresholds for pseudo-labelling (``find_median``, PLOP l. 505-589).

    entropy [P] (the old model's ``normalized_entropy``) and predicted [P] long (its argmax, in
    [0, num_classes)) over the pixels collected from the step's training images -> float32
    [num_classes]: threshold[c] = max(median entropy of the pixels predicted c, min_threshold),
    and min_threshold for a class that no pixel is predicted as.
    As PLOP: it collects only the pixels labelled background (``labels == 0``, l. 530), which the
    caller selects; the rule is a floor, not a cap (``max(thresholds[c], base_threshold)``, l. 584),
    with PLOP's ``--threshold 0.001`` (argparser.py l. 55); a class without pixels stays at 0
    before that floor (l. 551, 558-559), so it gets the floor.
    Differences: the exact median (the lower one for an even count, as ``torch.median``) instead
    of PLOP's 100-bin histogram estimate, whose loop adds bin indices instead of bin counts
    (l. 568); and the scale: PLOP's entropies are these / (num_classes * log(C_total)) (see
    ``normalized_entropy``), so its floor is min_threshold = 0.001 * num_classes * log(C_total)
    here (about 0.045 in VOC 15-1's first step, 0.5 in ADE 100-50): pass that to match PLOP.
    """
    if entropy.dim() != 1 or entropy.shape != predicted.shape:
        raise ValueError(
            f"expected entropy [P] and predicted [P], got {tuple(entropy.shape)} and {tuple(predicted.shape)}"
        )
    if predicted.dtype != torch.long:
        raise ValueError(f"predicted must be torch.long, got {predicted.dtype}")
    if predicted.numel() and (predicted.min() < 0 or predicted.max() >= num_classes):
        raise ValueError(f"predicted classes must lie in [0, {num_classes}), got {predicted.min()}..{predicted.max()}")
    values = entropy.detach().float()
    if not values.numel():
        return torch.full((num_classes,), min_threshold, device=values.device)
    counts = torch.bincount(predicted, minlength=num_classes)  # [num_classes]
    order = values.argsort()
    order = order[predicted[order].argsort(stable=True)]  # by class, then by entropy
    middle = counts.cumsum(0) - counts + (counts - 1) // 2  # each class's lower median in that order
    medians = values[order][middle.clamp(0, values.numel() - 1)]
    return torch.where(counts > 0, medians, 0.0).clamp(min=min_threshold)


def pseudo_label(labels: Tensor, old_logits: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """PLOP's entropy pseudo-labelling of the background (PLOP l. 228-296, ``--pseudo entropy``).

    labels [N, H, W] long (0 = background, 255 = void, new classes >= Co), old_logits [N, Co, H, W],
    thresholds [Co] (``entropy_thresholds``) -> (labels [N, H, W] long, factor [N] float32).
    On each pixel labelled 0, with c the old model's argmax: if its normalized entropy is below
    thresholds[c] the label becomes c (so a certain background prediction keeps 0), otherwise 255,
    whatever c is (l. 256-267). Other labels are kept; a new tensor is returned.
    factor = (certain background pixels) / (background pixels + 1e-6) per image, PLOP's
    ``classif_adaptive_factor`` (l. 284-293), which multiplies each image's per-pixel cross-entropy
    before PLOP's mean over all pixels (l. 351-352); an image without background pixels gets 0, as
    in PLOP. PLOP's options (argparser.py l. 54-56) leave ``pseudo_soft``, ``pseudo_ablation`` and
    ``classif_adaptive_min_factor`` (0: no clamp) off, so those branches are not reproduced.
    Difference: PLOP's background is ``labels < old_classes`` (l. 230), which would also relabel
    old classes; its step datasets label old classes 0, so it is the same set of pixels there.
    """
    _check_labels(old_logits, labels)
    if thresholds.shape != old_logits.shape[1:2]:
        raise ValueError(
            f"thresholds must be [Co] = [{old_logits.shape[1]}] for old logits {tuple(old_logits.shape)}, "
            f"got {tuple(thresholds.shape)}"
        )
    old_logits = old_logits.detach()
    predicted = old_logits.argmax(dim=1)  # [N, H, W]
    certain = normalized_entropy(old_logits) < thresholds.detach().float()[predicted]
    background = labels == 0
    new_labels = torch.where(background, torch.where(certain, predicted, IGNORE_INDEX), labels)
    factor = (background & certain).sum(dim=(1, 2)) / (background.sum(dim=(1, 2)) + 1e-6)
    return new_labels, factor.float()


def local_pod(new_features: Sequence[Tensor], old_features: Sequence[Tensor], *, scales: int = 3) -> Tensor:
    """PLOP's Local POD distillation, averaged over feature maps (PLOP l. 716-972, 979-1014).

    new_features, old_features: as many [N, F_i, h_i, w_i] maps each, equal shapes pairwise -> scalar.
    Per map, d = new**2 - old**2; for each grid s = 1, 2, 4, ... (``scales`` grids) d is cut into
    s x s windows of (h // s) x (w // s) pixels, the bottom/right remainder dropped; each window
    gives its width-pooled [F, h // s] and height-pooled [F, w // s] means. The map's loss per image
    is the Euclidean norm of all of them, concatenated over windows and grids (pooling is linear,
    so that is the distance between the embeddings of new**2 and of old**2); then the mean over
    images, then over maps. As PLOP's options (argparser.py l. 50-53 with the defaults l. 443, 460:
    ``--pod local``, prepro "pow", grids [1, 2, 4]): no L2 normalisation (forced off, l. 754), the
    "frobenius" distance (l. 934), the mean over the batch (l. 963) and over layers (l. 972).
    Left to the caller: PLOP's factors, 0.01 per backbone/ASPP map and 0.0005 for the logits, which
    it appends as a last map after adding the new model's new-class logits to its background one
    (l. 823-829), and its schedule sqrt(C_total / C_new) (l. 969); it divides by the number of maps
    including the logits, so PLOP's loss = sqrt(C_total / C_new) * (0.01 * L * local_pod(L maps)
    + 0.0005 * local_pod([logits])) / (L + 1).
    Differences: windows have h // s rows (PLOP takes w // s for both sides: the same on square
    maps); identical features give a zero gradient, not NaN; a map smaller than a grid skips it.
    """
    if len(new_features) != len(old_features) or not new_features:
        raise ValueError(
            f"expected as many new as old feature maps (at least 1), got {len(new_features)} and {len(old_features)}"
        )
    if scales < 1:
        raise ValueError(f"scales must be at least 1, got {scales}")
    layer_losses = []
    for new, old in zip(new_features, old_features):
        if new.dim() != 4 or new.shape != old.shape:
            raise ValueError(
                f"expected equal [N, F, h, w] feature maps, got new {tuple(new.shape)} and old {tuple(old.shape)}"
            )
        n, f, h, w = new.shape
        d = new.float() ** 2 - old.detach().float() ** 2
        embeddings = []
        # Grids finer than the map (a window under one pixel) are skipped: small inputs still work.
        for s in (2**i for i in range(scales) if 2**i <= min(h, w)):
            windows = d[:, :, : s * (h // s), : s * (w // s)].reshape(n, f, s, h // s, s, w // s)
            embeddings += [windows.mean(dim=5).flatten(1), windows.mean(dim=3).flatten(1)]
        layer_losses.append(torch.linalg.vector_norm(torch.cat(embeddings, dim=1), dim=1).mean())
    return torch.stack(layer_losses).mean()


def binary_cross_entropy(logits: Tensor, labels: Tensor, channels: Sequence[int], *,
                         pos_weights: Tensor | None = None) -> Tensor:
    """Per-class binary cross-entropy with logits on some channels, after SSUL's loss.

    logits [N, C, H, W], labels [N, H, W] long, channels: indices in [0, C) -> scalar. For each
    channel c of ``channels`` the target is 1 where label == c and 0 elsewhere; the loss is the mean
    over the labelled pixels (label != 255) and over the given channels. A batch with no labelled
    pixel gives 0, still attached to the graph.
    SSUL (``BCEWithLogitsLossWithIgnoreIndex``, utils/loss.py l. 23-56, its default ``bce_loss``,
    main.py l. 396-398) one-hot encodes over all C channels, no pos_weight, sums the C channels and
    averages over the labelled pixels: C times this function with channels = range(C). Choosing the
    channels lets a frozen-old method leave out the frozen ones (constants in SSUL).
    pos_weights [K], one per channel of ``channels``: the weight of that channel's positive pixels
    (``F.binary_cross_entropy_with_logits``' pos_weight), to let a rare class's few positives count.
    """
    _check_labels(logits, labels)
    n_classes = logits.shape[1]
    channels = list(channels)
    if not channels or not all(0 <= c < n_classes for c in channels):
        raise ValueError(f"channels must be a non-empty list of indices in [0, {n_classes}), got {channels}")
    index = torch.tensor(channels, device=labels.device).view(1, -1, 1, 1)
    targets = (labels.unsqueeze(1) == index).float()  # [N, K, H, W]
    if pos_weights is not None:
        if pos_weights.shape != (len(channels),):
            raise ValueError(f"pos_weights must be [{len(channels)}] (one per channel), got {tuple(pos_weights.shape)}")
        pos_weights = pos_weights.float().view(1, -1, 1, 1)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float()[:, channels], targets, reduction="none",
                                                   pos_weight=pos_weights)
    total = per_pixel.masked_fill((labels == IGNORE_INDEX).unsqueeze(1), 0.0).sum()
    return total / (_labelled(labels, IGNORE_INDEX) * len(channels))


def _weighted_mean(per_pixel: Tensor, labels: Tensor, ignore_index: int, class_weights: Tensor | None,
                   image_weights: Tensor | None) -> Tensor:
    """The mean of per-pixel losses [N, H, W] (0 on ignored pixels) over the labelled pixels,
    weighted by their class (numerator and divisor) and their image (numerator only)."""
    if class_weights is None:
        divisor = _labelled(labels, ignore_index)
    else:
        if class_weights.dim() != 1:
            raise ValueError(f"class_weights must be [C], got {tuple(class_weights.shape)}")
        labelled = labels != ignore_index
        pixel_weights = class_weights.float()[torch.where(labelled, labels, 0)] * labelled
        per_pixel = per_pixel * pixel_weights
        divisor = pixel_weights.sum().clamp(min=1e-12)
    if image_weights is not None:
        if image_weights.shape != labels.shape[:1]:
            raise ValueError(f"image_weights must be [N] = [{labels.shape[0]}], got {tuple(image_weights.shape)}")
        per_pixel = per_pixel * image_weights.float().view(-1, 1, 1)
    return per_pixel.sum() / divisor


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
            f"new logits {tuple(new_logits.shape)} and old logits {tuple(old_logits.shape)} "
            "differ in batch or spatial size"
        )
    if not 1 <= c_old <= c_new:
        raise ValueError(f"the old model has {c_old} channels, the new one {c_new}: the old must be 1..new")
    return c_old
