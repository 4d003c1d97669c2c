"""Incremental scenarios and protocols: how a fully labelled dataset becomes a sequence of steps.

A scenario ("15-5", "15-1", "15-5s", "10-2-2-2") says how many classes each step adds; class
order is the dataset's index order and background (0) belongs to step 0. A protocol says which
training images a step uses:

- disjoint: images containing at least one new class and otherwise only old classes,
  background or void (no future class);
- overlapped: any image containing a new class.

Training labels of step k: its new classes U_k keep their index; with ``old_labels="drop"``
(MiB's protocol, what a user annotating only new classes produces) every other pixel becomes
background; with ``"keep"`` (the ILT authors' experiments) old classes keep theirs too and only
future classes become background. Evaluation labels: seen classes are scored, unseen ones
become void. All relabelling is a 256-entry lookup table applied to the mask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from services.data.datasets import SegmentationSource
from services.data.presence import class_presence
from services.errors import InvalidInput
from services.labels import BACKGROUND_INDEX, IGNORE_INDEX

Protocol = Literal["disjoint", "overlapped"]
OldLabels = Literal["drop", "keep"]
PROTOCOLS = ("disjoint", "overlapped")
OLD_LABELS = ("drop", "keep")


class ScenarioError(InvalidInput):
    """A scenario or protocol argument is malformed or does not fit the dataset."""


def parse_scenario(scenario: str, num_foreground: int) -> list[int]:
    """Classes added per step (background excluded) for a dataset of ``num_foreground`` classes.

    "20" -> [20] (one step, every class: a model trained on all); "8-3" -> [8, 3]; "15-5s" -> [15, 1, 1, 1, 1, 1]; "15-1" on 20 classes -> [15, 1, 1, 1, 1, 1]
    (a two-number scenario whose second number divides the rest repeats it); "10-2-2-2" must add
    up to ``num_foreground`` exactly.
    """
    text = scenario.strip()
    m = re.fullmatch(r"(\d+)((?:-\d+)*)(s?)", text)
    if m is None:
        raise ScenarioError(f"scenario {scenario!r} is not of the form '20', '15-5', '15-1', '15-5s' or '10-2-2-2'")
    counts = [int(m.group(1))] + [int(x) for x in m.group(2).split("-")[1:]]
    if any(c < 1 for c in counts):
        raise ScenarioError(f"scenario {scenario!r}: every step must add at least one class")
    if m.group(3):  # "15-5s": the second number is a count of single-class steps
        if len(counts) != 2:
            raise ScenarioError(f"scenario {scenario!r}: the 's' form takes exactly two numbers, e.g. '15-5s'")
        counts = [counts[0]] + [1] * counts[1]
    elif len(counts) == 2 and sum(counts) < num_foreground and (num_foreground - counts[0]) % counts[1] == 0:
        counts = [counts[0]] + [counts[1]] * ((num_foreground - counts[0]) // counts[1])
    if sum(counts) != num_foreground:
        raise ScenarioError(
            f"scenario {scenario!r} covers {sum(counts)} classes ({'+'.join(map(str, counts))}) "
            f"but the dataset has {num_foreground} classes besides background"
        )
    return counts


@dataclass(frozen=True)
class Step:
    """One incremental step. Class indices are global; ``classes`` = old + new, contiguous from 0.

    ``train_indices`` index the training source; ``train_lut`` / ``eval_lut`` are uint8 [256]
    lookup tables from a mask in class space to this step's training / evaluation labels.
    """

    index: int
    old_classes: tuple[int, ...]
    new_classes: tuple[int, ...]
    train_indices: tuple[int, ...]
    train_lut: np.ndarray = field(repr=False, compare=False)
    eval_lut: np.ndarray = field(repr=False, compare=False)

    @property
    def classes(self) -> tuple[int, ...]:
        return self.old_classes + self.new_classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def remap(mask: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Relabel a uint8 mask [H, W] through a uint8 lookup table [256]; one vectorised gather."""
    return lut[mask]


def build_steps(
    source: SegmentationSource,
    scenario: str,
    protocol: Protocol = "disjoint",
    old_labels: OldLabels = "drop",
    *,
    presence: list[frozenset[int]] | None = None,
    cache_dir: str | None = None,
) -> list[Step]:
    """The steps of ``scenario`` over the training source under ``protocol``.

    ``presence`` (classes per item, from ``class_presence``) is computed, and cached under
    ``cache_dir`` when given, if not passed.
    """
    if protocol not in PROTOCOLS:
        raise ScenarioError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if old_labels not in OLD_LABELS:
        raise ScenarioError(f"old_labels must be one of {', '.join(OLD_LABELS)}, got {old_labels!r}")
    counts = parse_scenario(scenario, source.num_classes - 1)
    if presence is None:
        presence = class_presence(source, cache_dir)
    if len(presence) != len(source):
        raise ScenarioError(f"presence lists {len(presence)} items but the source has {len(source)}")
    steps, seen = [], 1  # background (0) is seen from step 0 on
    for k, count in enumerate(counts):
        old, new = tuple(range(seen)), tuple(range(seen, seen + count))
        seen += count
        indices = _step_items(presence, set(new), seen, protocol)
        if not indices:
            raise ScenarioError(
                f"step {k} of {scenario!r} ({protocol}) has no training image: no image shows "
                f"classes {[source.class_names[c] for c in new]}"
                + (" without a future class" if protocol == "disjoint" else "")
            )
        keep = set(new) | (set(old) if old_labels == "keep" else set())
        train_lut, eval_lut = _lut(keep, default=BACKGROUND_INDEX), _lut(set(range(seen)), default=IGNORE_INDEX)
        steps.append(Step(k, old, new, tuple(indices), train_lut, eval_lut))
    return steps


def joint_step(steps: list[Step], k: int) -> Step:
    """The joint-training upper bound at step k: the union of steps 0..k's images, every seen class labelled."""
    indices = sorted(set().union(*(steps[j].train_indices for j in range(k + 1))))
    step = steps[k]
    train_lut = _lut(set(step.classes), default=0)
    return Step(k, step.old_classes, step.new_classes, tuple(indices), train_lut, step.eval_lut)


def _step_items(presence: list[frozenset[int]], new: set[int], seen: int, protocol: Protocol) -> list[int]:
    """Items showing a new class; for disjoint, also no class at or above ``seen`` (the future)."""
    return [
        i for i, classes in enumerate(presence)
        if classes & new and (protocol == "overlapped" or max(classes) < seen)
    ]  # fmt: skip


def _lut(kept: set[int], default: int) -> np.ndarray:
    """uint8 [256]: kept classes map to themselves, void to void, everything else to ``default``."""
    lut = np.full(256, default, dtype=np.uint8)
    for c in kept:
        lut[c] = c
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut
