"""Methods are built from pieces; their loss is the weighted sum of the pieces' terms."""

from __future__ import annotations

import pytest
import torch

from services.learning import losses
from services.learning.growth import grow_classifier
from services.learning.methods import (
    METHODS,
    CrossEntropy,
    FeatureDistillation,
    FreezeEncoder,
    OutputDistillation,
    UnbiasedCrossEntropy,
    UnbiasedDistillation,
    build_method,
)
from services.learning.zoo import SegOutput, build_model
from tests.services.learning.tiny import TINY_ARCH

EXPECTED = {
    "ft": ([CrossEntropy], False),
    "joint": ([CrossEntropy], False),
    "ld": ([CrossEntropy, OutputDistillation], True),
    "le": ([CrossEntropy, FeatureDistillation], True),
    "ef": ([CrossEntropy, FreezeEncoder], False),
    "ef+ld": ([CrossEntropy, FreezeEncoder, OutputDistillation], True),
    "ld+le": ([CrossEntropy, OutputDistillation, FeatureDistillation], True),
    "mib": ([UnbiasedCrossEntropy, UnbiasedDistillation], True),
}


@pytest.mark.parametrize("name", METHODS)
def test_each_method_has_its_pieces(name: str) -> None:
    method = build_method(name, 3)
    kinds, needs_teacher = EXPECTED[name]
    assert [type(p) for p in method.pieces] == kinds
    assert method.needs_teacher is needs_teacher
    assert method.classifier_init == ("mib" if name == "mib" else "random")


def test_defaults_are_the_authors_weights() -> None:
    pieces = {type(p): p for p in build_method("ld+le", 3).pieces}
    assert pieces[OutputDistillation].lambda_d == 1.0
    assert pieces[FeatureDistillation].lambda_e == 50.0
    mib = {type(p): p for p in build_method("mib", 3).pieces}
    assert mib[UnbiasedDistillation].lambda_u == 10.0 and mib[UnbiasedCrossEntropy].old_classes == 3


def test_step_zero_is_plain_cross_entropy() -> None:
    for name in METHODS:
        method = build_method(name, 0)
        assert [type(p) for p in method.pieces] == [CrossEntropy] and not method.needs_teacher


def test_bad_names_and_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown method 'lwf'"):
        build_method("lwf", 3)
    with pytest.raises(ValueError, match="method 'ft' does not use lambda_d"):
        build_method("ft", 3, lambda_d=2.0)
    with pytest.raises(ValueError, match="unknown loss weight.*lambda_x"):
        build_method("ld", 3, lambda_x=2.0)
    assert build_method("ld", 3, lambda_d=None, lambda_e=None).name == "ld"  # None = default
    with pytest.raises(ValueError, match="lambda_e must be a number >= 0"):
        build_method("le", 3, lambda_e=-1.0)
    with pytest.raises(ValueError, match="num_old_classes must be an int >= 0"):
        build_method("ld", -1)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    teacher = build_model(TINY_ARCH, 3).eval()
    return teacher, grow_classifier(teacher, 2)


def test_loss_is_the_weighted_sum_of_the_terms(models) -> None:
    teacher, student = models
    x = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 5, (2, 32, 32))
    with torch.no_grad():
        out, old = student(x), teacher(x)
    terms = build_method("ld+le", 3, lambda_d=2.0, lambda_e=10.0).loss(out, old, labels)
    ce = losses.cross_entropy(out.logits, labels)
    ld = losses.output_distillation(out.logits, old.logits)
    le = losses.feature_distillation(out.features, old.features)
    torch.testing.assert_close(terms["ce"], ce)
    torch.testing.assert_close(terms["ld"], 2.0 * ld)
    torch.testing.assert_close(terms["le"], 10.0 * le)
    torch.testing.assert_close(terms["loss"], ce + 2.0 * ld + 10.0 * le)


def test_setup_checks_the_models_fit(models) -> None:
    teacher, student = models
    with pytest.raises(ValueError, match="needs the previous model as teacher"):
        build_method("ld", 3).setup(student, None)
    with pytest.raises(ValueError, match="built for 4 old classes but the teacher has 3"):
        build_method("ld", 4).setup(student, teacher)
    with pytest.raises(ValueError, match="grow its classifier"):
        build_method("ft", 3).setup(teacher, None)
    with pytest.raises(ValueError, match="needs the previous model's outputs"):
        OutputDistillation().loss(SegOutput(torch.zeros(1, 5, 1, 1), torch.zeros(1, 1, 1, 1)), None,
                                  torch.zeros(1, 1, 1, dtype=torch.long))


def test_freeze_encoder_freezes_weights_and_batchnorm_statistics() -> None:
    model = build_model(TINY_ARCH, 3)
    method = build_method("ef", 3)
    student = grow_classifier(model, 1)
    method.setup(student, None)
    student.train()
    method.train_mode(student)
    assert not any(p.requires_grad for p in student.encoder_parameters())
    assert all(p.requires_grad for p in student.decoder_parameters())
    assert not any(m.training for m in student.backbone.modules())
    assert student.classifier.training
