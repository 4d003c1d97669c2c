"""Scenario parsing and step building: membership per protocol, training and evaluation labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.data.datasets import SegmentationSource, open_source
from services.data.protocols import ScenarioError, build_steps, joint_step, parse_scenario, remap
from services.data.step_dataset import SegmentationDataset
from services.data.synthetic import write_shapes_dataset
from services.data.transforms import EvalTransform


@pytest.mark.parametrize(
    ("scenario", "n", "expected"),
    [
        ("8-3", 11, [8, 3]),
        ("19-1", 20, [19, 1]),
        ("15-5", 20, [15, 5]),
        ("15-1", 20, [15, 1, 1, 1, 1, 1]),
        ("15-5s", 20, [15, 1, 1, 1, 1, 1]),
        ("10-2", 20, [10, 2, 2, 2, 2, 2]),
        ("10-2-2-2", 16, [10, 2, 2, 2]),
        (" 2-1 ", 3, [2, 1]),
        ("11", 11, [11]),  # one step with every class: a model trained on all of them
    ],
)
def test_parse_scenario(scenario: str, n: int, expected: list[int]) -> None:
    assert parse_scenario(scenario, n) == expected


@pytest.mark.parametrize(
    ("scenario", "n", "message"),
    [
        ("8-4", 11, "covers 12 classes"),
        ("7-3", 11, "covers 10 classes"),
        ("10-2-2-2", 20, "covers 16 classes .* 20 classes besides background"),
        ("15-5s", 21, "covers 20 classes"),
        ("0-11", 11, "at least one class"),
        ("8", 11, "covers 8 classes"),
        ("8-", 11, "not of the form"),
        ("8+3", 11, "not of the form"),
        ("10-2-2s", 16, "exactly two numbers"),
    ],
)
def test_parse_scenario_errors(scenario: str, n: int, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(scenario, n)


# Classes each training image shows (0 = background) for a 4-class dataset, scenario "2-1-1".
PRESENCE = [
    frozenset({0, 1}),  # 0
    frozenset({0, 2}),  # 1
    frozenset({0, 1, 2}),  # 2
    frozenset({0, 1, 3}),  # 3: step-1 class with an old one
    frozenset({0, 3}),  # 4
    frozenset({4}),  # 5
    frozenset({0, 2, 4}),  # 6
    frozenset({0, 3, 4}),  # 7: steps 1 and 2 at once
    frozenset({0}),  # 8: background only, in no step
]


def _source() -> SegmentationSource:
    names = ("background", "a", "b", "c", "d")
    items = tuple((Path(f"{i}.jpg"), Path(f"{i}.png")) for i in range(len(PRESENCE)))
    lut = np.arange(256, dtype=np.int16)
    return SegmentationSource("synthetic", "train", names, items, lut)


def test_disjoint_membership() -> None:
    steps = build_steps(_source(), "2-1-1", "disjoint", presence=PRESENCE)
    assert [s.train_indices for s in steps] == [(0, 1, 2), (3, 4), (5, 6, 7)]
    assert [(s.old_classes, s.new_classes) for s in steps] == [
        ((0,), (1, 2)),
        ((0, 1, 2), (3,)),
        ((0, 1, 2, 3), (4,)),
    ]
    assert steps[2].classes == (0, 1, 2, 3, 4) and steps[2].num_classes == 5


def test_overlapped_membership() -> None:
    steps = build_steps(_source(), "2-1-1", "overlapped", presence=PRESENCE)
    assert [s.train_indices for s in steps] == [(0, 1, 2, 3, 6), (3, 4, 7), (5, 6, 7)]


def test_training_labels_drop_and_keep() -> None:
    mask = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    drop = build_steps(_source(), "2-1-1", "overlapped", "drop", presence=PRESENCE)
    keep = build_steps(_source(), "2-1-1", "overlapped", "keep", presence=PRESENCE)
    assert remap(mask, drop[0].train_lut).tolist() == [[0, 1, 2], [0, 0, 255]]
    assert remap(mask, keep[0].train_lut).tolist() == [[0, 1, 2], [0, 0, 255]]
    assert remap(mask, drop[1].train_lut).tolist() == [[0, 0, 0], [3, 0, 255]]
    assert remap(mask, keep[1].train_lut).tolist() == [[0, 1, 2], [3, 0, 255]]
    assert remap(mask, drop[2].train_lut).tolist() == [[0, 0, 0], [0, 4, 255]]
    assert remap(mask, keep[2].train_lut).tolist() == [[0, 1, 2], [3, 4, 255]]


def test_evaluation_labels_void_the_unseen() -> None:
    mask = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    steps = build_steps(_source(), "2-1-1", "disjoint", presence=PRESENCE)
    assert remap(mask, steps[0].eval_lut).tolist() == [[0, 1, 2], [255, 255, 255]]
    assert remap(mask, steps[1].eval_lut).tolist() == [[0, 1, 2], [3, 255, 255]]
    assert remap(mask, steps[2].eval_lut).tolist() == [[0, 1, 2], [3, 4, 255]]


def test_joint_step_unions_the_data_and_keeps_every_seen_label() -> None:
    steps = build_steps(_source(), "2-1-1", "disjoint", "drop", presence=PRESENCE)
    joint = joint_step(steps, 1)
    assert joint.train_indices == (0, 1, 2, 3, 4)
    assert joint.classes == steps[1].classes
    mask = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    assert remap(mask, joint.train_lut).tolist() == [[0, 1, 2], [3, 0, 255]]


def test_bad_arguments_and_empty_steps() -> None:
    with pytest.raises(ScenarioError, match="protocol must be one of"):
        build_steps(_source(), "2-1-1", "mixed", presence=PRESENCE)  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="old_labels must be one of"):
        build_steps(_source(), "2-1-1", old_labels="forget", presence=PRESENCE)  # type: ignore[arg-type]
    no_d = [p - {4} for p in PRESENCE]
    with pytest.raises(ScenarioError, match=r"step 2 of '2-1-1' \(disjoint\) has no training image.*\['d'\]"):
        build_steps(_source(), "2-1-1", "disjoint", presence=no_d)
    with pytest.raises(ScenarioError, match="presence lists 2 items"):
        build_steps(_source(), "2-1-1", presence=PRESENCE[:2])


def test_steps_on_a_real_folder_feed_a_dataset(tmp_path: Path) -> None:
    comps = {"train": [[1], [2], [1, 2], [3], [3, 1]]}
    root = write_shapes_dataset(tmp_path / "shapes", {"train": 5}, size=32, num_shapes=3, compositions=comps)
    src = open_source(root, "train")
    steps = build_steps(src, "2-1", "disjoint", "drop", cache_dir=str(tmp_path / "cache"))
    assert steps[0].train_indices == (0, 1, 2) and steps[1].train_indices == (3, 4)
    assert any((tmp_path / "cache" / "presence").iterdir())
    ds = SegmentationDataset(src, steps[1].train_indices, steps[1].train_lut, EvalTransform(32))
    image, mask = ds[1]
    assert image.shape == (3, 32, 32)
    assert set(mask.unique().tolist()) <= {0, 3}  # the square (class 1) became background
    raw = torch.from_numpy(src.load_mask(4)).long()
    assert torch.equal(mask == 3, raw == 3)
