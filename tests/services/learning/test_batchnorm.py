"""BatchNorm statistics: precise re-estimation after training, the frozen policy, and the trainer's use of both."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from services.learning import batchnorm
from services.learning.config import TrainConfig
from services.learning.growth import grow_classifier
from services.learning.methods import build_method
from services.learning.sampling import EpochSampler, SeededItems
from services.learning.trainer import train
from services.learning.zoo import build_model
from tests.services.learning.tiny import TINY_ARCH, RandomSegDataset, class_map


def test_recalibrate_averages_the_batch_statistics_of_the_pass() -> None:
    bn = nn.BatchNorm2d(2, momentum=0.01)
    model = nn.Sequential(bn).train()
    # Two batches of two images: channel 0 is constant per batch (1 then 3), channel 1 zeros.
    first = torch.zeros(2, 2, 2, 2)
    first[:, 0] = 1.0
    second = torch.zeros(2, 2, 2, 2)
    second[:, 0] = 3.0
    second[0, 1] = 2.0  # channel 1 of the second batch: half 2, half 0 -> mean 1, unbiased var 8/7
    seen = batchnorm.recalibrate(model, [first, second])
    assert seen == 4
    # The plain average of the two batches' statistics, not the momentum-0.01 drift from 0 / 1.
    assert torch.allclose(bn.running_mean, torch.tensor([2.0, 0.5]))
    assert torch.allclose(bn.running_var, torch.tensor([0.0, 4 / 7]))
    assert bn.momentum == 0.01  # restored


def test_recalibrate_leaves_eval_mode_layers_and_empty_passes_alone() -> None:
    frozen, trained = nn.BatchNorm2d(1), nn.BatchNorm2d(1)
    model = nn.Sequential(frozen, trained).train()
    frozen.eval()
    frozen.running_mean.fill_(5.0)
    batchnorm.recalibrate(model, [torch.ones(2, 1, 2, 2)])
    # The frozen layer normalises with its own statistics, (1 - 5) / 1, and the next one averages that.
    assert frozen.running_mean.item() == 5.0 and trained.running_mean.item() == pytest.approx(-4.0, abs=1e-4)
    trained.running_mean.fill_(7.0)
    assert batchnorm.recalibrate(model, []) == 0
    assert trained.running_mean.item() == 7.0  # nothing seen: nothing changed


def _step(policy: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = build_model(TINY_ARCH, 3)
    student = grow_classifier(teacher, 2, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=1, batch_size=2, device="cpu", batchnorm=policy)
    train(student, build_method("mib", 3), RandomSegDataset(4, 5), config, teacher=teacher, class_map=class_map(5))
    return teacher, student


def _stats(model: nn.Module) -> list[torch.Tensor]:
    return [layer.running_mean for layer in batchnorm.batchnorm_layers(model)]


def test_frozen_policy_keeps_the_parents_statistics_in_an_incremental_step() -> None:
    teacher, student = _step("frozen")
    assert all(torch.equal(a, b) for a, b in zip(_stats(student), _stats(teacher)))


def test_recalibrate_policy_gives_the_statistics_of_the_trained_weights() -> None:
    _, updated = _step("update")
    _, recalibrated = _step("recalibrate")
    # Same weights (the pass happens after training), different statistics.
    weights = lambda m: [p for n, p in m.state_dict().items() if "running" not in n and "num_batches" not in n]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(weights(updated), weights(recalibrated)))
    assert any(not torch.allclose(a, b) for a, b in zip(_stats(updated), _stats(recalibrated)))
    # Recalibrated statistics are those of one pass over the data with the trained weights (the
    # trainer's batches: its loader's pass "epoch" 1 of this 1-epoch run, seed 0).
    again = [s.clone() for s in _stats(recalibrated)]
    recalibrated.train()
    sampler = EpochSampler(4, batch_size=2, seed=0)
    sampler.set_epoch(1)
    loader = torch.utils.data.DataLoader(SeededItems(RandomSegDataset(4, 5)), 2, sampler=sampler, drop_last=True)
    batchnorm.recalibrate(recalibrated, [img for img, _ in loader])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(again, _stats(recalibrated)))


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="batchnorm must be one of recalibrate, update, frozen"):
        TrainConfig(batchnorm="sometimes")
