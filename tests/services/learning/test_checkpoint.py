"""Final model files (sha256-checked) and the RNG part of the training state."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from services.learning.checkpoint import (
    CheckpointError,
    ChecksumMismatch,
    atomic_torch_save,
    capture_rng_state,
    load_model,
    restore_rng_state,
    save_model,
    sha256_file,
)
from services.learning.trainer import load_model as load_model_from_trainer
from services.learning.zoo import build_model
from tests.services.learning.tiny import TINY_ARCH, class_map


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(TINY_ARCH, 3).eval()


def test_model_file_round_trip(model, tmp_path: Path) -> None:
    path = tmp_path / "models" / "v1.pt"
    digest = save_model(path, model, class_map(3), {"method": "ld", "step": 1, "miou": 0.5})
    assert digest == sha256_file(path) and len(digest) == 64
    assert [p.name for p in path.parent.iterdir()] == ["v1.pt"]  # no temporary file left behind
    loaded = load_model(path, expected_sha256=digest)
    assert loaded.class_map == class_map(3) and loaded.meta == {"method": "ld", "step": 1, "miou": 0.5}
    assert loaded.sha256 == digest and loaded.model.arch == TINY_ARCH and not loaded.model.training
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).logits, model(x).logits, rtol=0, atol=0)
    assert load_model_from_trainer is load_model  # the trainer re-exports the same function


def test_a_changed_file_fails_its_checksum(model, tmp_path: Path) -> None:
    path = tmp_path / "v1.pt"
    digest = save_model(path, model, class_map(3))
    with open(path, "r+b") as f:  # flip one byte in the middle
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ChecksumMismatch, match=f"expected {digest}"):
        load_model(path, expected_sha256=digest)


def test_bad_model_files_and_arguments(model, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class_map must name the model's 3 channels"):
        save_model(tmp_path / "a.pt", model, {0: "background", 1: "cat"})
    with pytest.raises(ValueError, match="JSON-compatible"):
        save_model(tmp_path / "a.pt", model, class_map(3), {"when": object()})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(tmp_path / "junk.pt")
    atomic_torch_save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a Strata model file"):
        load_model(tmp_path / "other.pt")


def test_rng_state_survives_a_file(tmp_path: Path) -> None:
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    atomic_torch_save(capture_rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(3), random.random(), np.random.rand())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]
