"""The losses against values worked out by hand with math.exp/log on one- and three-pixel tensors."""

from __future__ import annotations

import math

import pytest
import torch

from services.learning import losses


def px(*values: float) -> torch.Tensor:
    """Logits of one image with one pixel: [1, C, 1, 1]."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def log_softmax(values: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(v) for v in values))
    return [v - norm for v in values]


def softmax(values: list[float]) -> list[float]:
    return [math.exp(v) for v in log_softmax(values)]


# --- output distillation (ILT eq. 3) -------------------------------------------------------


def test_output_distillation_is_the_papers_form_over_all_new_channels() -> None:
    new, old = [0.5, -1.0, 2.0], [1.0, 0.2]
    q, log_p = softmax(old), log_softmax(new)  # log-softmax over all 3 new channels
    expected = -(q[0] * log_p[0] + q[1] * log_p[1])
    got = losses.output_distillation(px(*new), px(*old))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # MiB's renormalised form (softmax over the 2 old channels only, class mean) is another number.
    mib_form = -(q[0] * log_softmax(new[:2])[0] + q[1] * log_softmax(new[:2])[1]) / 2
    assert got.item() != pytest.approx(mib_form, rel=1e-3)


def test_output_distillation_mib_form_renormalises_over_the_old_channels() -> None:
    new, old = [1.0, 2.0, 0.5], [0.3, 1.0]
    q, log_p = softmax(old), log_softmax(new[:2])  # the third (new) channel plays no part
    expected = -(q[0] * log_p[0] + q[1] * log_p[1]) / 2
    got = losses.output_distillation(px(*new), px(*old), form="mib")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Raising the new class's logit changes nothing in this form; in the paper's form it costs.
    louder = [1.0, 2.0, 5.0]
    assert losses.output_distillation(px(*louder), px(*old), form="mib").item() == pytest.approx(expected, rel=1e-6)
    assert losses.output_distillation(px(*louder), px(*old)).item() > losses.output_distillation(px(*new), px(*old)).item()
    with pytest.raises(ValueError, match="form"):
        losses.output_distillation(px(*new), px(*old), form="other")


def test_output_distillation_averages_over_pixels_and_images() -> None:
    a_new, a_old = [0.5, -1.0, 2.0], [1.0, 0.2]
    b_new, b_old = [3.0, 0.0, -2.0], [-0.5, 0.5]

    def one(new: list[float], old: list[float]) -> float:
        q, lp = softmax(old), log_softmax(new)
        return -(q[0] * lp[0] + q[1] * lp[1])

    new = torch.cat([px(*a_new), px(*b_new)])  # [2, 3, 1, 1]
    old = torch.cat([px(*a_old), px(*b_old)])
    expected = (one(a_new, a_old) + one(b_new, b_old)) / 2
    assert losses.output_distillation(new, old).item() == pytest.approx(expected, rel=1e-6)


def test_output_distillation_gradient_reaches_the_new_logits_only() -> None:
    new = px(0.5, -1.0, 2.0).requires_grad_()
    old = px(1.0, 0.2).requires_grad_()
    losses.output_distillation(new, old).backward()
    assert old.grad is None
    # d/dz_j of -sum_c q_c log p_c = p_j * sum_c q_c - q_j = p_j - q_j (q padded with 0).
    p, q = softmax([0.5, -1.0, 2.0]), softmax([1.0, 0.2]) + [0.0]
    assert new.grad.view(-1).tolist() == pytest.approx([pj - qj for pj, qj in zip(p, q)], abs=1e-6)


def test_output_distillation_rejects_a_teacher_with_more_channels() -> None:
    with pytest.raises(ValueError, match="old model has 3 channels, the new one 2"):
        losses.output_distillation(px(0.0, 1.0), px(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="spatial size"):
        losses.output_distillation(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 1, 1))


# --- feature distillation (ILT eq. 4) ------------------------------------------------------


def test_feature_distillation_is_the_mean_squared_error() -> None:
    new = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 2, 1, 2).requires_grad_()
    old = torch.tensor([1.5, 2.0, 1.0, 4.0]).view(1, 2, 1, 2).requires_grad_()
    loss = losses.feature_distillation(new, old)
    assert loss.item() == pytest.approx((0.25 + 0 + 4 + 0) / 4)
    loss.backward()
    assert old.grad is None
    assert new.grad.view(-1).tolist() == pytest.approx([2 * d / 4 for d in (-0.5, 0.0, 2.0, 0.0)])


def test_feature_distillation_needs_equal_shapes() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        losses.feature_distillation(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))


# --- cross-entropy -------------------------------------------------------------------------


def test_cross_entropy_ignores_void_and_is_zero_without_labels() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, -1.0]]).T.reshape(1, 3, 1, 2)  # two pixels
    labels = torch.tensor([[[2, 255]]])
    expected = -log_softmax([0.0, 1.0, 2.0])[2]
    assert losses.cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    all_void = losses.cross_entropy(logits.clone().requires_grad_(), torch.full((1, 1, 2), 255))
    assert all_void.item() == 0.0 and all_void.requires_grad


def test_cross_entropy_names_shape_mistakes() -> None:
    with pytest.raises(ValueError, match="upsample the logits"):
        losses.cross_entropy(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="torch.long"):
        losses.cross_entropy(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))


# --- MiB's unbiased losses -----------------------------------------------------------------


def test_unbiased_cross_entropy_by_hand() -> None:
    # 4 channels: background, one old class (1), new classes 2 and 3; old_classes = 2.
    pix = [[0.3, 1.2, -0.4, 0.8], [1.0, -2.0, 0.5, 0.1], [0.0, 0.7, 2.0, -1.0], [0.2, 0.2, 0.2, 3.0]]
    labels = [0, 1, 2, 255]  # background, an old class (counts as background), a new class, void
    logits = torch.tensor(pix).T.reshape(1, 4, 1, 4)
    target = torch.tensor(labels).view(1, 1, 4)

    def bg_or_old(v: list[float]) -> float:
        return math.log(math.exp(v[0]) + math.exp(v[1])) - math.log(sum(math.exp(x) for x in v))

    expected = -(bg_or_old(pix[0]) + bg_or_old(pix[1]) + log_softmax(pix[2])[2]) / 3
    assert losses.unbiased_cross_entropy(logits, target, old_classes=2).item() == pytest.approx(expected, rel=1e-6)
    # With one old class only (background) it is the ordinary cross-entropy.
    assert losses.unbiased_cross_entropy(logits, target, old_classes=1).item() == pytest.approx(
        losses.cross_entropy(logits, target).item(), rel=1e-6
    )


def test_unbiased_cross_entropy_edge_cases() -> None:
    logits = px(0.0, 1.0, 2.0).requires_grad_()
    void = losses.unbiased_cross_entropy(logits, torch.full((1, 1, 1), 255), old_classes=2)
    assert void.item() == 0.0
    void.backward()  # attached to the graph, with zero gradient
    assert logits.grad.abs().sum().item() == 0.0
    with pytest.raises(ValueError, match=r"old_classes must be in \[1, 3\)"):
        losses.unbiased_cross_entropy(px(0.0, 1.0, 2.0), torch.zeros(1, 1, 1, dtype=torch.long), old_classes=3)


def test_unbiased_distillation_by_hand() -> None:
    new, old = [0.4, -0.3, 1.1, 0.6], [0.9, -0.2]  # Co = 2: background + one old class
    q = softmax(old)
    norm = math.log(sum(math.exp(v) for v in new))
    log_bg = math.log(math.exp(new[0]) + math.exp(new[2]) + math.exp(new[3])) - norm
    log_1 = new[1] - norm
    paper = -(q[0] * log_bg + q[1] * log_1)
    assert losses.unbiased_distillation(px(*new), px(*old), class_mean=False).item() == pytest.approx(paper, rel=1e-6)
    assert losses.unbiased_distillation(px(*new), px(*old)).item() == pytest.approx(paper / 2, rel=1e-6)


def test_unbiased_distillation_gradient_and_no_new_classes() -> None:
    new = px(0.4, -0.3, 1.1).requires_grad_()
    old = px(0.9, -0.2, 0.0).requires_grad_()
    # Same number of channels (MiB's code breaks there): plain KD, -sum q log p / Co.
    loss = losses.unbiased_distillation(new, old)
    q, lp = softmax([0.9, -0.2, 0.0]), log_softmax([0.4, -0.3, 1.1])
    assert loss.item() == pytest.approx(-sum(a * b for a, b in zip(q, lp)) / 3, rel=1e-6)
    loss.backward()
    assert old.grad is None and new.grad is not None
