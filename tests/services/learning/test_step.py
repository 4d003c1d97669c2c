"""One incremental step (``learning.step``): what a new network and a grown one start from, the
seeding rule the worker and the experiments share, and scores per evaluation set."""

from __future__ import annotations

import pytest
import torch

from services.evaluation.evaluate import evaluate
from services.learning.config import StepConfig, TrainConfig
from services.learning.growth import classifier_convs
from services.learning.names import BASE_METHOD
from services.learning.step import EvalSet, prepare_step, run_step
from services.learning.zoo import build_model
from tests.services.learning.tiny import TINY_ARCH, RandomSegDataset, class_map

TRAIN = TrainConfig(epochs=1, batch_size=2, device="cpu", seed=3)


def config(method: str = "ld", step_index: int = 1, **kw) -> StepConfig:
    return StepConfig(method=method, train=TRAIN, architecture=TINY_ARCH, pretrained_backbone=False,
                      step_index=step_index, **kw)


def new_rows(model) -> torch.Tensor:
    parent, name = classifier_convs(model)[-1]
    return getattr(parent, name).weight[3:].detach().clone()


def test_a_new_network_is_seeded_and_trains_with_plain_cross_entropy_whatever_the_method() -> None:
    a, teacher, method = prepare_step(config("mib", 0, loss_weights={"lambda_u": 5.0}), None, 3)
    b, _, _ = prepare_step(config("ld", 0), None, 3)
    assert teacher is None and method.name == BASE_METHOD and method.needs_teacher is False
    assert a.arch == TINY_ARCH and a.num_classes == 3
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_grown_model_keeps_its_parent_and_draws_new_rows_by_seed_and_step() -> None:
    parent = build_model(TINY_ARCH, 3)
    one, teacher, method = prepare_step(config("ld", 1), parent, 5)
    again, _, _ = prepare_step(config("ld", 1), parent, 5)
    later, _, _ = prepare_step(config("ld", 2), parent, 5)
    assert teacher is parent and method.name == "ld" and method.num_old_classes == 3 and one.num_classes == 5
    assert not any(p.requires_grad for p in parent.parameters())  # the teacher is frozen
    assert torch.equal(new_rows(one), new_rows(again)) and not torch.equal(new_rows(one), new_rows(later))
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        assert torch.allclose(one.eval()(x).logits[:, :3], parent.eval()(x).logits, atol=1e-5)


def test_a_loss_weight_the_method_does_not_use_is_refused() -> None:
    with pytest.raises(ValueError, match="does not use lambda_e"):
        prepare_step(config("ld", 1, loss_weights={"lambda_e": 1.0}), build_model(TINY_ARCH, 3), 4)


def test_run_step_trains_and_scores_every_set_like_evaluate() -> None:
    parent = build_model(TINY_ARCH, 3).eval()
    sets = [EvalSet(RandomSegDataset(3, 4, seed=7), old_classes=[0, 1, 2], new_classes=[3]),
            EvalSet(RandomSegDataset(2, 4, seed=8), batch_size=1)]
    result = run_step(config("ld", 1), parent, class_map(4), RandomSegDataset(4, 4, seed=1), sets)
    assert result.method == "ld" and result.model.num_classes == 4 and not result.model.training
    assert len(result.scores) == 2 and result.scores[0].miou_old is not None
    for s, scored in zip(sets, result.scores):
        expected = evaluate(result.model, s.dataset, 4, "cpu", batch_size=s.batch_size)
        assert torch.equal(scored.confusion.counts, expected.confusion.counts)
