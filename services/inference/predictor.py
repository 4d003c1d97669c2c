"""One model version, loaded and ready to segment: ``Predictor``.

A predictor turns PIL images into masks of GLOBAL class indices at each image's own size:
``eval_preprocess`` (the evaluation's own preprocessing: the whole image, shorter side at the
version's ``image_size``, aspect ratio kept), then ``predict_logits`` (the evaluation's own
forward: padded to the network's stride, the padding cropped off the logits, which are upsampled
bilinearly to the INPUT image's resolution), argmax over channels there, channel -> global index
through a lookup table (the model's channel ch is global class ``sorted(class_map)[ch]``). Images
that preprocess to the same size share one forward.

The checkpoint is downloaded to ``{cache_dir}/checkpoints/{version}/model.pt`` (reused when its
sha256 matches the registry's) and loaded with that sha256 checked: a version is immutable, and
the bytes served must be the bytes recorded. On CUDA the model runs channels_last under autocast
(bf16, or fp16 where bf16 is unsupported); on the CPU in float32. Nothing here touches CUDA at
import time: the device is resolved when a predictor is loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from services.data.transforms import as_hw, eval_preprocess, shorter_side
from services.db.models import ModelVersion
from services.evaluation.predict import predict_logits, same_size_groups
from services.inference.errors import ModelLoadError
from services.learning.checkpoint import load_model
from services.learning.classmap import channel_names, channels_of
from services.learning.trainer import autocast_dtype, resolve_device
from services.learning.zoo import SegModel
from services.storage import ObjectStore
from services.storage.cache import checkpoint_path, fetch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionSpec:
    """What serving a version needs from its registry row (plain values: no session attached)."""

    model_id: int
    model_name: str
    version: int
    architecture: str
    class_map: dict[int, str]  # global index -> name
    image_size: int  # the shorter side, in pixels, the model was trained and evaluated at
    checkpoint_key: str
    checkpoint_sha256: str

    @property
    def key(self) -> tuple[int, int]:
        return self.model_id, self.version

    @classmethod
    def from_row(cls, row: ModelVersion, model_name: str) -> "VersionSpec":
        size = (row.hyperparameters or {}).get("image_size")
        if size is None:
            raise ModelLoadError(
                f"model version {row.version} has no image_size in its hyperparameters: cannot preprocess for it")
        try:
            # An int is the shorter side. Rows may also hold a (height, width) pair, from when images
            # were squashed to that size: the version then serves at min(h, w) as its shorter side.
            short = shorter_side(size) if isinstance(size, int) else min(as_hw(tuple(size)))
        except (TypeError, ValueError) as err:
            raise ModelLoadError(f"model version {row.version} has an invalid image_size {size!r}: {err}") from None
        return cls(
            model_id=row.model_id, model_name=model_name, version=row.version, architecture=row.architecture,
            class_map={int(k): str(v) for k, v in row.class_map.items()}, image_size=short,
            checkpoint_key=row.checkpoint_key, checkpoint_sha256=row.checkpoint_sha256,
        )


class Predictor:
    """One loaded version: model (eval, on its device), image size and channel -> index table."""

    def __init__(self, spec: VersionSpec, model: SegModel, device: torch.device | str = "cpu") -> None:
        if model.num_classes != len(spec.class_map):
            raise ModelLoadError(
                f"model version {spec.version}: the checkpoint has {model.num_classes} channels but the registry "
                f"lists {len(spec.class_map)} classes")
        self.spec = spec
        self.version = spec.version
        self.image_size = spec.image_size
        self.class_names = dict(spec.class_map)
        self.device = torch.device(device)
        self.amp_dtype = autocast_dtype(self.device, amp=True)
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=self.memory_format)
        # uint8 [C]: channel -> global class index (indices are < 255 by the classes table's CHECK).
        self.channel_to_index = torch.tensor(channels_of(spec.class_map), dtype=torch.uint8, device=self.device)

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: VersionSpec, store: ObjectStore, cache_dir: Path, device: str = "auto") -> "Predictor":
        """Download (or reuse) the checkpoint, load it with its sha256 checked, warm it up."""
        return cls.from_file(spec, fetch_version(spec, store, cache_dir), device)

    @classmethod
    def from_file(cls, spec: VersionSpec, path: Path, device: str = "auto") -> "Predictor":
        """Load a fetched checkpoint (sha256 checked again) and warm it up: the torch part of ``load``,
        which the service runs on its torch thread (services/inference/compute.py)."""
        started = time.perf_counter()
        predictor = cls(spec, read_version_model(spec, path), resolve_device(device))
        predictor.warm_up()
        log.info("loaded model %r version %s (%s, %s classes, image size %s) on %s in %.2f s", spec.model_name,
                 spec.version,
                 spec.architecture, len(spec.class_map), spec.image_size, predictor.device,
                 time.perf_counter() - started)
        return predictor

    def warm_up(self, batch_size: int = 1) -> None:
        """One forward on a blank square batch at the version's size, so the first request does not
        pay for lazy initialisation."""
        s = self.image_size
        self._forward(torch.zeros(batch_size, 3, s, s), [(s, s)] * batch_size)

    # --- inference -------------------------------------------------------------------------
    def predict_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Masks of global class indices, uint8 [H_i, W_i], one per image at that image's size."""
        inputs = [eval_preprocess(im, self.image_size) for im in images]  # [3, h_i, w_i], shorter side image_size
        masks: dict[int, np.ndarray] = {}
        for group in same_size_groups([x.shape for x in inputs]):  # one forward per preprocessed size
            found = self._forward(torch.stack([inputs[i] for i in group]),
                                  [(images[i].height, images[i].width) for i in group])
            masks.update(zip(group, found))
        return [masks[i] for i in range(len(images))]

    def _forward(self, batch: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """[N, 3, h, w] normalised -> N uint8 [H_i, W_i] global class indices at ``sizes`` (H_i, W_i)."""
        x = batch.to(self.device, non_blocking=True)
        with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
            logits = predict_logits(self.model, x, sizes, memory_format=self.memory_format)  # [C, H_i, W_i] each
            indices = [self.channel_to_index[one.argmax(dim=0)] for one in logits]  # [H_i, W_i] each
        return [ix.cpu().numpy() for ix in indices]


def load_version_model(spec: VersionSpec, store: ObjectStore, cache_dir: Path) -> SegModel:
    """The version's network on the CPU, in eval mode: its checkpoint downloaded (or the local copy
    reused) and loaded with its sha256 checked, and checked against the registry's description."""
    return read_version_model(spec, fetch_version(spec, store, cache_dir))


def fetch_version(spec: VersionSpec, store: ObjectStore, cache_dir: Path) -> Path:
    """The version's checkpoint file, downloaded (or the local copy reused) with its sha256 checked."""
    path = checkpoint_path(cache_dir, spec.model_id, spec.version)
    try:
        fetch(store, spec.checkpoint_key, spec.checkpoint_sha256, path)
    except Exception as err:  # missing object, checksum mismatch
        raise ModelLoadError(f"model version {spec.version} cannot be loaded: {err}") from err
    return path


def read_version_model(spec: VersionSpec, path: Path) -> SegModel:
    """The network of a fetched checkpoint, loaded with its sha256 checked and checked against the
    registry's description."""
    try:
        loaded = load_model(path, expected_sha256=spec.checkpoint_sha256)
    except Exception as err:  # corrupt file, checksum mismatch, unreadable checkpoint
        raise ModelLoadError(f"model version {spec.version} cannot be loaded: {err}") from err
    _check_matches_registry(spec, loaded.model, loaded.class_map)
    return loaded.model


def _check_matches_registry(spec: VersionSpec, model: SegModel, checkpoint_names: Mapping[int, str]) -> None:
    """The checkpoint must be the model the registry describes: same architecture and classes."""
    if model.arch != spec.architecture:
        raise ModelLoadError(
            f"model version {spec.version}: the checkpoint is a {model.arch}, the registry says {spec.architecture}")
    expected = channel_names(spec.class_map)
    if dict(checkpoint_names) != expected:
        raise ModelLoadError(
            f"model version {spec.version}: the checkpoint's channels name {dict(checkpoint_names)}, the registry's "
            f"class map gives {expected}")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return torch.autocast(device_type="cpu", enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)
