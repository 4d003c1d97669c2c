"""Which items a training pass sees, in which order, with which random draws.

The trainer makes ONE DataLoader per run and moves it from pass to pass with ``set_epoch``. Every
draw a pass depends on comes from (seed, epoch) and the item's position in that pass, computed in
the main process by ``EpochSampler``: the shuffle, and a seed per item with which ``SeededItems``
runs the dataset's augmentation. So a run gives the same batches whatever the number of loader
workers (and whether they persist between epochs), and a run resumed at any epoch continues with
the draws an uninterrupted one would have made, with no loader state in the checkpoint.

Sharding: with ``world_size`` > 1, rank r takes positions r, r + world_size, ... of each pass's
permutation (one global batch is then the union of the ranks' batches at the same step).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

_MIX = 100_003  # spreads (seed, epoch) apart: distinct pairs give distinct generator seeds


def pass_seed(seed: int, epoch: int) -> int:
    """The seed of pass ``epoch`` of a run seeded with ``seed``."""
    return seed * _MIX + epoch


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, item seed) for a shuffled pass over ``num_items``; this rank's share only.

    Each pass is ``num_items // (batch_size * world_size)`` whole global batches (the rest is
    dropped, as BatchNorm needs more than one sample per batch); ``len`` is this rank's items.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.num_items, self.seed, self.rank, self.world_size = num_items, seed, rank, world_size
        self.per_pass = (num_items // (batch_size * world_size)) * batch_size * world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_pass // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(pass_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_items, generator=generator)[: self.per_pass]
        item_seeds = torch.randint(0, 2**62, (self.per_pass,), generator=generator)
        for position in range(self.rank, self.per_pass, self.world_size):
            yield int(order[position]), int(item_seeds[position])


class SeededItems(Dataset):
    """``dataset[index]`` with torch's RNG seeded by the item's seed, in the process that loads it:
    the augmentation of an item depends on its seed alone. The caller's RNG is left as it was."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
