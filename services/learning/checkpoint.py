"""Checkpoint files: the per-epoch training state and the final model, both plain dicts.

Training state (``last.pt`` in a run's checkpoint directory) holds everything a resumed run needs
to continue to the same result: model, optimizer, scheduler and grad-scaler states, completed
epochs, class map, config and RNG states. The final model file holds only what inference needs:
``{"format", "arch", "num_classes", "class_map", "state_dict", "meta"}``; ``save_model`` returns
its sha256 and ``load_model`` verifies it when given one.

Every file is written to a temporary name in the same directory, fsynced and renamed, so a crash
leaves either the old file or the new one, never half of one. Files are read with
``torch.load(weights_only=True)``: plain containers and tensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from services.errors import InvalidInput
from services.learning.zoo import SegModel, build_model

TRAIN_STATE_FILE = "last.pt"
TRAIN_STATE_FORMAT = "strata-train-state/1"
MODEL_FORMAT = "strata-model/1"


class CheckpointError(InvalidInput):
    """A checkpoint file is missing, malformed, or does not fit what it is loaded into."""


class ChecksumMismatch(CheckpointError):
    """A model file's sha256 is not the expected one."""


class LoadedModel(NamedTuple):
    model: SegModel  # on the CPU, in eval mode
    class_map: dict[int, str]
    meta: dict[str, Any]
    sha256: str


def check_class_map(class_map: Mapping[int, str], num_classes: int) -> dict[int, str]:
    """A copy of ``class_map`` after checking it names exactly the channels 0..num_classes-1."""
    if not isinstance(class_map, Mapping):
        raise ValueError(f"class_map must be a dict of class index -> name, got {type(class_map).__name__}")
    if set(class_map) != set(range(num_classes)):
        extra = sorted(set(class_map) - set(range(num_classes)), key=str)[:5]
        missing = sorted(set(range(num_classes)) - set(class_map))[:5]
        raise ValueError(
            f"class_map must name the model's {num_classes} channels 0..{num_classes - 1}: "
            f"missing {missing}, not channels {extra}"
        )
    bad = [k for k, v in class_map.items() if not isinstance(v, str) or not v]
    if bad:
        raise ValueError(f"class_map names must be non-empty strings; not so for {sorted(bad)[:5]}")
    return {int(k): str(v) for k, v in sorted(class_map.items())}


# --- final model ---------------------------------------------------------------------------


def save_model(path: Path, model: SegModel, class_map: Mapping[int, str], meta: Mapping[str, Any] | None = None) -> str:
    """Write the final model file atomically; returns its sha256 (hex).

    meta: JSON-compatible facts to keep with the weights (method, step, metrics...).
    """
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model meta must be JSON-compatible (str, int, float, bool, None, list, dict): {err}") from err
    payload = {
        "format": MODEL_FORMAT,
        "arch": model.arch,
        "num_classes": model.num_classes,
        "class_map": check_class_map(class_map, model.num_classes),
        "state_dict": portable_state_dict(model),
        "meta": meta,
    }
    atomic_torch_save(payload, Path(path))
    return sha256_file(Path(path))


def load_model(path: Path, expected_sha256: str | None = None) -> LoadedModel:
    """Read a model file written by ``save_model`` (checking its sha256 first when given)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ChecksumMismatch(
            f"model file {path} has sha256 {digest}, expected {expected_sha256}: the file is corrupt or not the one recorded"
        )
    payload = _load(path)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not a Strata model file (format {MODEL_FORMAT})")
    model = build_model(payload["arch"], payload["num_classes"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"model file {path} does not fit {payload['arch']}: {err}") from err
    model.eval()
    class_map = check_class_map(payload["class_map"], model.num_classes)
    return LoadedModel(model, class_map, payload["meta"], digest)


# --- training state ------------------------------------------------------------------------


def save_training_state(checkpoint_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format tag) to ``checkpoint_dir/last.pt`` atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / TRAIN_STATE_FILE
    atomic_torch_save({"format": TRAIN_STATE_FORMAT, **state}, path)
    return path


def load_training_state(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The state in ``checkpoint_dir/last.pt``, or None when there is none yet."""
    path = Path(checkpoint_dir) / TRAIN_STATE_FILE
    if not path.is_file():
        return None
    state = _load(path)
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a Strata training state (format {TRAIN_STATE_FORMAT})")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU and CUDA, Python, NumPy) as plain, loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # NumPy's state holds an ndarray, which weights_only loading refuses: store it as a list.
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- helpers -------------------------------------------------------------------------------


def portable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state on the CPU in the default memory layout (loads anywhere)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file next to ``path``, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, unpickling refused, truncated file...
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (not possible on every platform: best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _as_tuple(value: Any) -> Any:
    """Python's RNG state is nested tuples; a round trip may turn them into lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
