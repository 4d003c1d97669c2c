"""The model zoo: shapes, the encoder/decoder split, and backbone weights from files or the hub cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from services.learning.zoo import (
    ARCH_SPECS,
    ARCHITECTURES,
    BackboneWeightsMismatch,
    PretrainedWeightsUnavailable,
    SegOutput,
    build_model,
    imagenet_weights_file,
)
from tests.services.learning.tiny import TINY_ARCH

# Encoder output channels and output stride of each architecture's last backbone feature map.
ENCODER = {
    "deeplabv3_resnet101": (2048, 8),
    "deeplabv3_resnet50": (2048, 8),
    "fcn_resnet50": (2048, 8),
    "deeplabv3_mobilenet_v3_large": (960, 16),
    "lraspp_mobilenet_v3_large": (960, 16),
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_at_input_size_and_encoder_features(arch: str) -> None:
    model = build_model(arch, 4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 64))
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (1, 4, 48, 64)
    channels, stride = ENCODER[arch]
    assert out.features.shape == (1, channels, 48 // stride, 64 // stride)
    assert model.arch == arch and model.num_classes == 4


def test_encoder_and_decoder_parameters_split_the_model() -> None:
    model = build_model(TINY_ARCH, 3)
    enc = {id(p) for p in model.encoder_parameters()}
    dec = {id(p) for p in model.decoder_parameters()}
    assert enc and dec and not enc & dec
    assert enc | dec == {id(p) for p in model.parameters()}


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'unet'.*lraspp_mobilenet_v3_large"):
        build_model("unet", 3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model(TINY_ARCH, 0)


def _same_backbone(model: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> bool:
    own = model.backbone.state_dict()
    return all(torch.equal(own[k.removeprefix(prefix)], v) for k, v in state.items() if k.startswith(prefix))


def test_backbone_weights_from_an_imagenet_classification_file(tmp_path: Path) -> None:
    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    state = {k: v for k, v in classifier.state_dict().items() if k.startswith("features.")}
    path = tmp_path / "mobilenet.pth"
    torch.save(classifier.state_dict(), path)
    model = build_model(TINY_ARCH, 3, backbone_weights=path)
    assert _same_backbone(model, state, prefix="features.")


def test_backbone_weights_from_a_segmentation_checkpoint(tmp_path: Path) -> None:
    source = build_model("deeplabv3_mobilenet_v3_large", 7)  # another head, the same encoder
    path = tmp_path / "seg.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    model = build_model(TINY_ARCH, 3, backbone_weights=path)
    assert _same_backbone(model, source.backbone.state_dict())


def test_backbone_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(BackboneWeightsMismatch, match="do not fit the lraspp_mobilenet_v3_large backbone"):
        build_model(TINY_ARCH, 3, backbone_weights=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(TINY_ARCH, 3, backbone_weights=tmp_path / "absent.pth")


def test_pretrained_backbone_without_cache_or_network_names_the_file_and_where_it_looked(offline_hub: Path,
                                                                                        tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        build_model(TINY_ARCH, 3, pretrained_backbone=True, weights_dir=tmp_path / "weights")
    message, file_name = str(err.value), Path(ARCH_SPECS[TINY_ARCH].imagenet_weights.url).name
    assert err.value.file_name == file_name and file_name in message
    assert f"weights directory {tmp_path / 'weights'}" in message and str(offline_hub) in message
    assert ARCH_SPECS[TINY_ARCH].imagenet_weights.url in message
    # What to change is the interface's to say (a spec field, a flag): no flag of one CLI here.
    assert "--" not in message.replace(ARCH_SPECS[TINY_ARCH].imagenet_weights.url, "")


def test_pretrained_backbone_comes_from_the_weights_dir_first(offline_hub: Path, tmp_path: Path) -> None:
    # An air-gapped worker: torchvision's file, under its own name, in STRATA_BACKBONE_WEIGHTS_DIR.
    weights = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    (tmp_path / "weights").mkdir()
    torch.save(weights, tmp_path / "weights" / imagenet_weights_file(TINY_ARCH))
    model = build_model(TINY_ARCH, 3, pretrained_backbone=True, weights_dir=tmp_path / "weights")
    assert _same_backbone(model, weights, prefix="features.")


def test_pretrained_backbone_comes_from_the_hub_cache(offline_hub: Path) -> None:
    # What torchvision would have downloaded, placed in the cache by hand (an offline install).
    cached = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    offline_hub.mkdir(parents=True)
    torch.save(cached, offline_hub / Path(ARCH_SPECS[TINY_ARCH].imagenet_weights.url).name)
    model = build_model(TINY_ARCH, 3, pretrained_backbone=True)
    assert _same_backbone(model, cached, prefix="features.")
