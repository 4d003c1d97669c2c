"""Methods are built from pieces; their loss is the weighted sum of the pieces' terms."""

from __future__ import annotations

import pytest
import torch

from services.learning import losses
from services.learning.config import TrainConfig
from services.learning.growth import grow_classifier
from services.learning.methods import (
    METHODS,
    CrossEntropy,
    FeatureDistillation,
    FreezeEncoder,
    FreezeOld,
    LocalPOD,
    OutputDistillation,
    PseudoLabelBinaryCrossEntropy,
    PseudoLabelCrossEntropy,
    UnbiasedCrossEntropy,
    UnbiasedDistillation,
    build_method,
)
from services.learning.trainer import train
from services.learning.zoo import SegOutput, build_model
from tests.services.learning.tiny import TINY_ARCH, RandomSegDataset, class_map

EXPECTED = {
    "ft": ([CrossEntropy], False),
    "joint": ([CrossEntropy], False),
    "ld": ([CrossEntropy, OutputDistillation], True),
    "le": ([CrossEntropy, FeatureDistillation], True),
    "ef": ([CrossEntropy, FreezeEncoder], False),
    "ef+ld": ([CrossEntropy, FreezeEncoder, OutputDistillation], True),
    "ld+le": ([CrossEntropy, OutputDistillation, FeatureDistillation], True),
    "mib": ([UnbiasedCrossEntropy, UnbiasedDistillation], True),
    "plop": ([PseudoLabelCrossEntropy, LocalPOD], True),
    "frozen-old": ([FreezeOld, PseudoLabelBinaryCrossEntropy], True),
}


@pytest.mark.parametrize("name", METHODS)
def test_each_method_has_its_pieces(name: str) -> None:
    method = build_method(name, 3)
    kinds, needs_teacher = EXPECTED[name]
    assert [type(p) for p in method.pieces] == kinds
    assert method.needs_teacher is needs_teacher
    assert method.classifier_init == ("mib" if name in ("mib", "plop", "frozen-old") else "random")


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


def _tiny_step(name: str) -> tuple:
    torch.manual_seed(0)
    teacher = build_model(TINY_ARCH, 3)
    student = grow_classifier(teacher, 2, init="mib", generator=torch.Generator().manual_seed(0))
    return teacher, student, build_method(name, 3)


def test_frozen_old_trains_only_the_background_and_new_classifier_rows() -> None:
    teacher, student, method = _tiny_step("frozen-old")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    config = TrainConfig(epochs=2, batch_size=2, device="cpu")
    train(student, method, RandomSegDataset(4, 5), config, teacher=teacher, class_map=class_map(5))
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    convs = {f"classifier.{c}.{p}" for c in ("low_classifier", "high_classifier") for p in ("weight", "bias")}
    assert changed == convs  # no encoder, decoder or BatchNorm statistic moved
    for key in convs:
        old_rows, now = before[key][1:3], student.state_dict()[key]
        assert torch.equal(now[1:3], old_rows), f"{key}: an old class's row moved"
        assert not torch.equal(now[0], before[key][0]) and not torch.equal(now[3:], before[key][3:])


def test_pseudo_labels_need_a_calibration_from_background_pixels() -> None:
    teacher, student, method = _tiny_step("plop")
    ce = method.pieces[0]
    assert isinstance(ce, PseudoLabelCrossEntropy) and method.needs_calibration
    images = torch.randn(2, 3, 32, 32)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    with torch.no_grad():
        out = teacher.eval()(images)  # calibration runs the teacher in eval mode
    with pytest.raises(RuntimeError, match="needs a calibration pass"):
        ce.loss(out, out, labels)
    # Only background pixels count: with none, every threshold is the floor.
    method.calibrate(teacher, [(images, torch.full_like(labels, 3))])
    assert torch.equal(ce.thresholds, torch.full((3,), 0.001))
    method.calibrate(teacher, [(images, labels)])
    entropy = losses.normalized_entropy(out.logits)[:, ::4, ::4].flatten()
    predicted = out.logits.argmax(1)[:, ::4, ::4].flatten()
    assert torch.equal(ce.thresholds, losses.entropy_thresholds(entropy, predicted, 3))
    terms = ce.loss(student(images), out, labels)
    assert set(terms) == {"plce"} and torch.isfinite(terms["plce"])


def test_local_pod_grows_with_the_share_of_old_classes() -> None:
    teacher, student, method = _tiny_step("plop")
    pod = method.pieces[1]
    method.setup(student, teacher)
    assert isinstance(pod, LocalPOD) and pod.factor == pytest.approx((5 / 2) ** 0.5)  # PLOP: sqrt(C / C_new)
    with torch.no_grad():
        out = teacher(torch.randn(2, 3, 32, 32))
    assert pod.loss(out, out, torch.zeros(2, 32, 32, dtype=torch.long))["pod"].item() == 0.0
    assert build_method("plop", 3, lambda_pod=0.5).pieces[1].lambda_pod == 0.5
