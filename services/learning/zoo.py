"""The model zoo: torchvision segmentation networks behind one small interface.

``build_model(arch, num_classes)`` returns a ``SegModel`` whose ``forward`` gives both the
logits (upsampled to the input size) and the encoder's output, the feature map that ILT's
feature distillation (L'_E) compares. The encoder is the backbone up to its last feature map,
before the decoder/ASPP: ``"out"`` for DeepLab v3 and FCN, ``"high"`` for LR-ASPP.

Pretrained backbones: a local file (``backbone_weights``) is always preferred; without one,
``pretrained_backbone=True`` asks for torchvision's ImageNet weights, taken from a directory of
weight files under torchvision's own file names (``weights_dir``: an air-gapped deployment's), the
torch hub cache (``$TORCH_HOME/hub/checkpoints``) or a download, in that order. When none works,
``PretrainedWeightsUnavailable`` says which file was looked for and where; what the user should
change is said by the interface that asked (a spec field, a flag), not here.

Nothing here touches CUDA: models are built on the CPU.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    WeightsEnum,
)
from torchvision.models import segmentation as tv_seg

from services.learning.errors import BackboneWeightsMismatch, PretrainedWeightsUnavailable
from services.learning.names import ARCHITECTURES


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and where its pieces are."""

    builder: Callable[..., nn.Module]
    imagenet_weights: WeightsEnum  # the backbone's ImageNet weights in torchvision
    backbone_family: str  # "resnet" or "mobilenet": the layout of a classification checkpoint
    feature_key: str  # which backbone output is the encoder's last feature map
    aux_loss_arg: bool  # whether the torchvision builder accepts aux_loss


ARCH_SPECS: dict[str, ArchSpec] = {
    "deeplabv3_resnet101": ArchSpec(
        tv_seg.deeplabv3_resnet101, ResNet101_Weights.IMAGENET1K_V1, "resnet", "out", True
    ),
    "deeplabv3_resnet50": ArchSpec(
        tv_seg.deeplabv3_resnet50, ResNet50_Weights.IMAGENET1K_V1, "resnet", "out", True
    ),
    "deeplabv3_mobilenet_v3_large": ArchSpec(
        tv_seg.deeplabv3_mobilenet_v3_large, MobileNet_V3_Large_Weights.IMAGENET1K_V1, "mobilenet", "out", True
    ),
    "lraspp_mobilenet_v3_large": ArchSpec(
        tv_seg.lraspp_mobilenet_v3_large, MobileNet_V3_Large_Weights.IMAGENET1K_V1, "mobilenet", "high", False
    ),
    "fcn_resnet50": ArchSpec(tv_seg.fcn_resnet50, ResNet50_Weights.IMAGENET1K_V1, "resnet", "out", True),
}

if tuple(ARCH_SPECS) != ARCHITECTURES:  # names.py is the torch-free copy for CLI parsers
    raise RuntimeError("services.learning.names.ARCHITECTURES and zoo.ARCH_SPECS disagree")


class SegOutput(NamedTuple):
    """What a ``SegModel`` returns.

    logits:   [N, C, H, W], upsampled bilinearly to the input's H x W.
    features: [N, F, h, w], the encoder's last feature map (before the decoder/ASPP).
    stages:   the output of each encoder stage, shallow to deep ([N, F_i, h_i, w_i]; the last is
              ``features``), for multi-scale feature distillation (PLOP's Local POD).
    """

    logits: Tensor
    features: Tensor
    stages: tuple[Tensor, ...] = ()


class SegModel(nn.Module):
    """A torchvision segmentation network split into encoder (``backbone``) and decoder
    (``classifier``), returning logits and encoder features together.

    Input: images [N, 3, H, W], already normalised by the data transforms.
    State-dict keys are ``backbone.*`` and ``classifier.*`` (torchvision's own names below).
    """

    def __init__(self, arch: str, num_classes: int, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.backbone = backbone
        self.classifier = classifier
        self._feature_key = ARCH_SPECS[arch].feature_key
        # LR-ASPP's head reads two backbone outputs (a dict); DeepLab's and FCN's read "out".
        self._head_takes_dict = arch.startswith("lraspp")
        # Stage outputs are caught by forward hooks: the backbone runs every block anyway.
        self._stages: list[Tensor] = []
        for block in stage_blocks(backbone):
            block.register_forward_hook(self._keep_stage)

    def _keep_stage(self, module: nn.Module, args: object, output: Tensor) -> None:
        self._stages.append(output)

    def forward(self, x: Tensor) -> SegOutput:
        """x [N, 3, H, W] -> SegOutput(logits [N, C, H, W], features [N, F, h, w], stages)."""
        self._stages = []
        feats = self.backbone(x)
        stages, self._stages = tuple(self._stages), []  # hold no tensor after the call
        head_in = feats if self._head_takes_dict else feats["out"]
        logits = self.classifier(head_in)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return SegOutput(logits=logits, features=feats[self._feature_key], stages=stages)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.classifier.parameters()

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}"


def stage_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The last block of each encoder stage (where the resolution is about to drop, and the end).

    ResNets: layer1..layer4. MobileNetV3: the block before each strided block (torchvision marks
    those ``_is_cn``) and the last block; the first conv (stride 2, 16 channels) is left out.
    """
    names = [n for n, _ in backbone.named_children()]
    if "layer4" in names:
        return [getattr(backbone, f"layer{i}") for i in range(1, 5)]
    blocks = list(backbone.children())
    ends = [i - 1 for i, b in enumerate(blocks) if getattr(b, "_is_cn", False) and i > 1]
    return [blocks[i] for i in ends] + [blocks[-1]]


def build_model(
    arch: str,
    num_classes: int,
    *,
    pretrained_backbone: bool = False,
    backbone_weights: Path | None = None,
    weights_dir: Path | None = None,
) -> SegModel:
    """Build ``arch`` with ``num_classes`` output channels (index 0 = background), on the CPU.

    backbone_weights: a file holding backbone weights: a torchvision ImageNet classification
        checkpoint (e.g. ``resnet101-63fe2227.pth``), a bare backbone state dict, or a
        segmentation checkpoint whose ``backbone.*`` entries are used. Loaded strictly.
    pretrained_backbone: without ``backbone_weights``, use torchvision's ImageNet weights
        (``weights_dir``, cache or download); raises ``PretrainedWeightsUnavailable`` when impossible.
    """
    spec = _spec(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    kwargs: dict = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if spec.aux_loss_arg:
        kwargs["aux_loss"] = False
    net = spec.builder(**kwargs)
    model = SegModel(arch, num_classes, net.backbone, net.classifier)
    if backbone_weights is not None:
        load_backbone_weights(model, _read_state_dict(Path(backbone_weights)), source=str(backbone_weights))
    elif pretrained_backbone:
        state, source = imagenet_state_dict(arch, weights_dir)
        load_backbone_weights(model, state, source=source)
    return model


def imagenet_weights_file(arch: str) -> str:
    """torchvision's file name of ``arch``'s ImageNet backbone weights (as its URL and cache name it)."""
    return Path(_spec(arch).imagenet_weights.url).name


def imagenet_state_dict(arch: str, weights_dir: Path | None = None) -> tuple[dict[str, Tensor], str]:
    """torchvision's ImageNet classification weights for ``arch``'s backbone and where they came
    from: ``weights_dir`` if it holds the file, else the torch hub cache or a download."""
    weights = _spec(arch).imagenet_weights
    file_name = imagenet_weights_file(arch)
    if weights_dir is not None and (Path(weights_dir) / file_name).is_file():
        return _read_state_dict(Path(weights_dir) / file_name), str(Path(weights_dir) / file_name)
    try:
        return weights.get_state_dict(progress=False), weights.url
    except (OSError, http.client.HTTPException) as err:  # URLError and socket errors are OSErrors
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        where = (f"in neither the weights directory {weights_dir} nor the torch hub cache {cache}"
                 if weights_dir is not None else f"not in the torch hub cache {cache}")
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for the {arch} backbone ({file_name}) are {where}, and could not be downloaded "
            f"from {weights.url}: {err}", file_name=file_name) from err


def load_backbone_weights(model: SegModel, state: Mapping[str, Tensor], *, source: str = "state dict") -> None:
    """Load ``state`` into ``model.backbone`` strictly, accepting the common checkpoint layouts."""
    expected = set(model.backbone.state_dict())
    candidates = _backbone_candidates(state, ARCH_SPECS[model.arch].backbone_family)
    fitting = next((c for c in candidates if set(c) == expected), None)
    if fitting is None:
        closest = min(candidates, key=lambda c: len(expected.symmetric_difference(c)))
        missing = sorted(expected - set(closest))
        unexpected = sorted(set(closest) - expected)
        raise BackboneWeightsMismatch(
            f"backbone weights from {source} do not fit the {model.arch} backbone: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        model.backbone.load_state_dict(fitting, strict=True)
    except RuntimeError as err:  # same keys, different shapes
        raise BackboneWeightsMismatch(
            f"backbone weights from {source} do not fit the {model.arch} backbone: {err}"
        ) from err


def _backbone_candidates(state: Mapping[str, Tensor], family: str) -> list[dict[str, Tensor]]:
    """The ways ``state`` may lay out backbone weights, each re-keyed to the backbone's names."""
    state = dict(state)
    candidates = [state]
    # A segmentation checkpoint (ours, or torchvision's COCO ones): keep its encoder.
    if any(k.startswith("backbone.") for k in state):
        candidates.append({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    # An ImageNet classification checkpoint: drop the classifier head, strip MobileNet's prefix.
    if family == "resnet":
        candidates.append({k: v for k, v in state.items() if not k.startswith("fc.")})
    else:
        candidates.append({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
    return candidates


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise BackboneWeightsMismatch(f"backbone weights file {path} is not a readable torch state dict: {err}") from err
    # Training checkpoints often nest the weights one level down.
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise BackboneWeightsMismatch(f"backbone weights file {path} does not hold a state dict of tensors")
    return obj


def _spec(arch: str) -> ArchSpec:
    try:
        return ARCH_SPECS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}") from None
