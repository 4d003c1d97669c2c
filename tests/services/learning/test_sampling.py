"""Each pass's order and augmentation come from (seed, pass) alone: the same batches whatever the
number of loader workers, whether they persist, and across a resume."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from services.learning.config import TrainConfig
from services.learning.methods import build_method
from services.learning.sampling import EpochSampler, SeededItems
from services.learning.trainer import train
from services.learning.zoo import build_model
from tests.services.learning.tiny import TINY_ARCH, RandomSegDataset, class_map


def test_a_pass_is_drawn_from_seed_and_epoch_alone() -> None:
    sampler = EpochSampler(10, batch_size=3, seed=7)
    first = list(sampler)
    assert len(first) == len(sampler) == 9  # whole batches only
    assert len({index for index, _ in first}) == 9
    assert list(EpochSampler(10, batch_size=3, seed=7)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_ranks_share_out_each_global_batch() -> None:
    """Rank r takes every world_size-th item: at each step the ranks' batches together are the
    single process's batch of world_size times the size."""
    single = list(EpochSampler(21, batch_size=4, seed=3))
    ranks = [list(EpochSampler(21, batch_size=2, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == 20 and all(len(r) == 10 for r in ranks)
    for step in range(5):
        together = ranks[0][2 * step:2 * step + 2] + ranks[1][2 * step:2 * step + 2]
        assert sorted(together) == sorted(single[4 * step:4 * step + 4])
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(8, batch_size=2, seed=0, rank=2, world_size=2)


def test_an_item_is_augmented_by_its_seed_and_the_callers_rng_is_left_alone() -> None:
    items = SeededItems(RandomSegDataset(4, 3, size=8, flip=True))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    draws = {seed: [items[(1, seed)][0] for _ in range(3)] for seed in range(6)}
    assert torch.equal(torch.get_rng_state(), state)
    for seed, same in draws.items():
        assert all(torch.equal(same[0], other) for other in same[1:]), f"seed {seed} gave different items"
    flipped = {seed: not torch.equal(d[0], items.dataset.images[1]) for seed, d in draws.items()}
    assert len(set(flipped.values())) == 2  # some seeds flip, some do not


def batches(workers: int, persistent: bool, epochs: int = 2) -> list[torch.Tensor]:
    sampler = EpochSampler(8, batch_size=2, seed=1)
    loader = DataLoader(SeededItems(RandomSegDataset(8, 3, size=8, flip=True)), batch_size=2, sampler=sampler,
                        num_workers=workers, persistent_workers=persistent)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += [images for images, _ in loader]
    return out


def test_the_batches_do_not_depend_on_the_loader_workers() -> None:
    reference = batches(0, False)
    for workers, persistent in ((1, False), (2, True)):
        got = batches(workers, persistent)
        assert len(got) == len(reference)
        assert all(torch.equal(a, b) for a, b in zip(reference, got)), (workers, persistent)


def test_training_ends_with_the_same_weights_with_or_without_loader_workers() -> None:
    def run(workers: int):
        torch.manual_seed(0)
        model = build_model(TINY_ARCH, 3)
        config = TrainConfig(epochs=2, batch_size=2, device="cpu", num_workers=workers, class_balance=0.5)
        return train(model, build_method("ft", 0), RandomSegDataset(4, 3, flip=True), config,
                     class_map=class_map(3)).state_dict()

    alone, with_workers = run(0), run(2)
    assert all(torch.equal(alone[k], with_workers[k]) for k in alone)
