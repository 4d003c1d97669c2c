"""Logits for preprocessed images at a chosen resolution: the one forward evaluation and serving share.

An image preprocessed by ``services.data.transforms.eval_preprocess`` (shorter side at the model's
size, aspect ratio kept) is padded bottom/right to a multiple of ``STRIDE`` with 0 (the mean colour
once normalised), run through the network, the padding is cropped off the logits, and the logits
are upsampled bilinearly to the resolution the caller scores or answers at: the label's for
evaluation, the uploaded image's for ``/segment``. The argmax is taken there, on the full-size
logits, never on a small mask resized afterwards.

Each image is padded only to its own stride multiple, so images of one size batch together and an
image's logits do not depend on the others in its batch (in eval mode).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from services.data.transforms import crop_padding, pad_to_stride


def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    *,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Iterator[torch.Tensor]:
    """One float [C, H_i, W_i] per image, in order: its logits at ``sizes[i]`` (H_i, W_i).

    images: [N, 3, h, w] normalised, all of one size, on the model's device; the model's
        ``forward(x).logits`` is [N, C, H, W] at the input's size (``SegModel``), and it should be
        in eval mode (the caller's business, as are ``no_grad`` and autocast).
    One forward for the batch; the upsampling is done image by image as the result is iterated,
    so at most one image's full-resolution logits need be held (C x H x W floats can be large):
    take each one's argmax before asking for the next.
    """
    if images.dim() != 4 or len(sizes) != images.shape[0]:
        raise ValueError(f"need images [N, 3, h, w] and N sizes, got {tuple(images.shape)} and {len(sizes)} sizes")
    h, w = images.shape[-2:]
    x = pad_to_stride(images).contiguous(memory_format=memory_format)
    logits = crop_padding(model(x).logits, (h, w))  # [N, C, h, w]
    return (_upsample(one, (int(size[0]), int(size[1]))) for one, size in zip(logits, sizes))


def same_size_groups(shapes: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices grouped by equal shape, in order of first appearance (a group batches in one forward)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(int(s) for s in shape), []).append(i)
    return list(groups.values())


def _upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, h, w] -> [C, H, W] bilinearly (unchanged when already that size)."""
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits.unsqueeze(0), size=size, mode="bilinear", align_corners=False)[0]
