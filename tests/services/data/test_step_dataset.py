"""A step's dataset decoded once into memory gives what reading the files gives."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from services.data.datasets import open_source
from services.data.step_dataset import SegmentationDataset
from services.data.synthetic import write_shapes_dataset
from services.data.transforms import EvalTransform, TrainTransform

IDENTITY = np.arange(256, dtype=np.uint8)


def dataset(root: Path, transform) -> SegmentationDataset:
    return SegmentationDataset(open_source(root, "train"), None, IDENTITY, transform)


def items(data: SegmentationDataset, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    return [data[i] for i in range(len(data))]


def test_preloaded_items_are_those_read_from_the_files(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path, {"train": 5}, size=48)
    read = dataset(root, TrainTransform(32))
    cached = dataset(root, TrainTransform(32))
    assert cached.preload(max_short=None, budget_bytes=2**20)
    for (a, m), (b, n) in zip(items(read), items(cached), strict=True):
        assert torch.equal(a, b) and torch.equal(m, n)


def test_preloading_scales_down_to_the_largest_size_drawn(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path, {"train": 3}, size=64)
    data = dataset(root, EvalTransform(64))
    assert data.preload(max_short=40, budget_bytes=2**20)
    image, mask = data._decoded[0]
    assert image.shape == (40, 40, 3) and mask.shape == (40, 40)
    assert set(np.unique(mask)) <= set(np.unique(np.asarray(data.source.load_mask(0))))  # NEAREST: no new labels
    larger = dataset(root, EvalTransform(64))
    assert larger.preload(max_short=128, budget_bytes=2**20)
    assert larger._decoded[0][0].shape == (64, 64, 3)  # never scaled up


def test_a_dataset_over_the_budget_is_read_from_its_files(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path, {"train": 3}, size=32)
    data = dataset(root, EvalTransform(32))
    assert not data.preload(max_short=None, budget_bytes=3 * 32 * 32 * 4 - 1)
    assert data._decoded is None
    assert len(items(data)) == 3
    assert data.preload(max_short=None, budget_bytes=3 * 32 * 32 * 4)


def test_a_pickled_dataset_decodes_its_own_copy(tmp_path: Path) -> None:
    """A training rank gets the dataset through a file: the decoded images stay behind and the
    other side decodes them again from the local files, to the same items."""
    root = write_shapes_dataset(tmp_path, {"train": 3}, size=32)
    data = dataset(root, TrainTransform(16))
    assert data.preload(max_short=24, budget_bytes=2**20)
    assert len(pickle.dumps(data)) < 3 * 24 * 24 * 3  # not the images
    copy = pickle.loads(pickle.dumps(data))
    assert copy._decoded is not None
    for (a, m), (b, n) in zip(items(data), items(copy), strict=True):
        assert torch.equal(a, b) and torch.equal(m, n)
