"""Class maps: which global class each output channel of a model predicts, and lookup tables
from a task's stored local masks to those channels.

A model's output channels are its classes in ascending global index (new classes always get
indices above every index ever assigned, so growing a model appends channels in that order).
Masks are stored in the task's LOCAL form: 0 background, k = k-th new class, n + j = the j-th
``also_labelled`` class, 255 ignore. A lookup table turns them into channel indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from services.labels import IGNORE_INDEX


def channels_of(class_map: Mapping[int | str, str]) -> list[int]:
    """Global class indices in channel order."""
    return sorted(int(k) for k in class_map)


def channel_names(class_map: Mapping[int | str, str]) -> dict[int, str]:
    """{channel: name}, as the trainer and checkpoints want it."""
    by_index = {int(k): v for k, v in class_map.items()}
    return {ch: by_index[idx] for ch, idx in enumerate(channels_of(class_map))}


def local_to_channel_lut(new: Sequence[str], also_labelled: Sequence[str], assigned: Mapping[str, int],
                         class_map: Mapping[int | str, str]) -> np.ndarray:
    """uint8 [256]: a task's local mask value -> channel of ``class_map``'s model.

    new, also_labelled: the task's classes in mask-value order; assigned: the global index of
    each new class. A new class of the task the model does not know becomes background (what
    those pixels are to it). An ``also_labelled`` class the model does not know (e.g. its lineage
    was rolled back past the task that added it) is ignored: those pixels are an object, just not
    one this model has a channel for, and calling them background would teach it wrong.
    """
    position = {idx: ch for ch, idx in enumerate(channels_of(class_map))}
    by_name = {v: int(k) for k, v in class_map.items()}
    lut = np.zeros(256, dtype=np.uint8)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for local, name in enumerate([*new, *also_labelled], start=1):
        index = assigned.get(name, by_name.get(name))
        if index is not None and index in position:
            lut[local] = position[index]
        elif local > len(new):
            lut[local] = IGNORE_INDEX
    return lut
