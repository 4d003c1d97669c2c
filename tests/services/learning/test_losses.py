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
    paper_form = losses.output_distillation(px(*new), px(*old)).item()
    assert losses.output_distillation(px(*louder), px(*old)).item() > paper_form
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


def test_cross_entropy_class_and_image_weights_by_hand() -> None:
    # Two images of one pixel each: image 0 labelled 0, image 1 labelled 1; logits [0, 0] -> log 2 each.
    logits = torch.zeros(2, 2, 1, 1)
    labels = torch.tensor([[[0]], [[1]]])
    log2 = math.log(2)
    # Class weights: (1 * log 2 + 3 * log 2) / (1 + 3) = log 2 (a weighted mean of equal losses).
    weighted = losses.cross_entropy(logits, labels, class_weights=torch.tensor([1.0, 3.0]))
    assert weighted.item() == pytest.approx(log2)
    # Unequal losses: image 1's logits favour class 0 by 1 -> loss log(1 + e).
    logits[1, 0] = 1.0
    hard = math.log(1 + math.e)
    assert losses.cross_entropy(logits, labels, class_weights=torch.tensor([1.0, 3.0])).item() == pytest.approx(
        (log2 + 3 * hard) / 4)
    # Image weights scale each image's losses; the divisor stays the labelled-pixel count (PLOP).
    assert losses.cross_entropy(logits, labels, image_weights=torch.tensor([0.5, 0.0])).item() == pytest.approx(
        0.5 * log2 / 2)
    # The unbiased CE takes class weights by the pixel's label too.
    unce = losses.unbiased_cross_entropy(torch.zeros(2, 3, 1, 1), torch.tensor([[[0]], [[2]]]), 2,
                                         class_weights=torch.tensor([1.0, 1.0, 3.0]))
    # pixel 0: -log(2/3) (background-or-old), pixel 1: -log(1/3); weights 1 and 3.
    assert unce.item() == pytest.approx((math.log(3 / 2) + 3 * math.log(3)) / 4)
    with pytest.raises(ValueError, match=r"image_weights must be \[N\] = \[2\]"):
        losses.cross_entropy(logits, labels, image_weights=torch.ones(3))


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


# --- PLOP: entropy, thresholds, pseudo-labels ----------------------------------------------


def test_normalized_entropy_by_hand() -> None:
    # softmax([log 3, 0]) = [3/4, 1/4]: H = 3/4 log(4/3) + 1/4 log 4 nats = 2 - 3/4 log2(3) bits.
    logits = torch.cat([px(math.log(3), 0.0), px(0.0, 0.0)], dim=3)  # [1, 2, 1, 2]: two pixels
    got = losses.normalized_entropy(logits)
    assert got.shape == (1, 1, 2)
    assert got.view(-1).tolist() == pytest.approx([2 - 0.75 * math.log2(3), 1.0], rel=1e-6)  # equal logits: 1
    assert losses.normalized_entropy(px(1e4, 0.0, 0.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_normalized_entropy_of_one_channel_is_zero_and_shapes_are_checked() -> None:
    assert losses.normalized_entropy(torch.randn(2, 1, 3, 4)).tolist() == torch.zeros(2, 3, 4).tolist()
    with pytest.raises(ValueError, match=r"\[N, C, H, W\], got \(2, 3\)"):
        losses.normalized_entropy(torch.zeros(2, 3))


def test_entropy_thresholds_are_floored_per_class_medians() -> None:
    entropy = torch.tensor([0.5, 0.9, 0.1, 0.0004, 0.3, 0.2])
    predicted = torch.tensor([0, 1, 0, 2, 0, 1])
    # class 0: {0.1, 0.3, 0.5} -> 0.3; class 1: {0.2, 0.9} -> the lower median 0.2;
    # class 2: {0.0004} -> the floor 0.001; class 3: no pixel -> the floor.
    got = losses.entropy_thresholds(entropy, predicted, 4)
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([0.3, 0.2, 0.001, 0.001])
    floored = losses.entropy_thresholds(entropy, predicted, 4, min_threshold=0.25)
    assert floored.tolist() == pytest.approx([0.3, 0.25, 0.25, 0.25])
    empty = losses.entropy_thresholds(torch.zeros(0), torch.zeros(0, dtype=torch.long), 3)
    assert empty.tolist() == pytest.approx([0.001] * 3)


def test_entropy_thresholds_name_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"in \[0, 2\), got 0..2"):
        losses.entropy_thresholds(torch.zeros(3), torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match=r"entropy \[P\] and predicted \[P\], got \(3,\) and \(2,\)"):
        losses.entropy_thresholds(torch.zeros(3), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="torch.long"):
        losses.entropy_thresholds(torch.zeros(2), torch.zeros(2), 2)


def test_pseudo_label_by_hand() -> None:
    # Old model: background + classes 1, 2. Normalized entropies: [3, 0, 0] and its permutations 0.334,
    # [5, 0, 0] 0.073. Thresholds: background 0.3, class 1 0.4, class 2 0.2.
    old = [[0.0, 3.0, 0.0], [3.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]]
    old_logits = torch.tensor(old).T.reshape(1, 3, 1, 6).repeat(2, 1, 1, 1)  # two images, six pixels
    labels = torch.tensor([[[0, 0, 0, 0, 3, 255]], [[3, 3, 255, 3, 3, 3]]])
    thresholds = torch.tensor([0.3, 0.4, 0.2])
    new_labels, factor = losses.pseudo_label(labels, old_logits.requires_grad_(), thresholds)
    # image 0: certain 1 -> 1; uncertain background -> 255; certain background stays 0;
    # uncertain 2 -> 255; the new class and the void pixel are kept.
    assert new_labels[0].view(-1).tolist() == [1, 255, 0, 255, 3, 255]
    assert new_labels[1].tolist() == labels[1].tolist()  # no background pixel: nothing changes
    # certain / background pixels (+1e-6): 2 / 4 for image 0; 0 for the image without background.
    assert factor.dtype == torch.float32 and factor.tolist() == pytest.approx([0.5, 0.0], abs=1e-6)
    assert factor[0].item() < 0.5  # PLOP's + 1e-6 in the denominator
    assert labels[0].view(-1).tolist() == [0, 0, 0, 0, 3, 255]  # the input is untouched
    assert not new_labels.requires_grad and not factor.requires_grad


def test_pseudo_label_uncertain_everywhere_and_one_old_channel() -> None:
    labels = torch.zeros(1, 1, 2, dtype=torch.long)
    two_pixels = torch.cat([px(2.0, 0.0), px(0.0, 2.0)], dim=3)
    all_void, factor = losses.pseudo_label(labels, two_pixels, torch.zeros(2))
    assert all_void.tolist() == [[[255, 255]]] and factor.tolist() == [0.0]
    # One old channel: entropy 0 everywhere, so the background stays when 0 < threshold (strict).
    one = torch.zeros(1, 1, 1, 2)
    assert losses.pseudo_label(labels, one, torch.tensor([0.001]))[0].tolist() == [[[0, 0]]]
    assert losses.pseudo_label(labels, one, torch.tensor([0.0]))[0].tolist() == [[[255, 255]]]


def test_pseudo_label_names_shape_mistakes() -> None:
    with pytest.raises(ValueError, match=r"thresholds must be \[Co\] = \[3\].*got \(2,\)"):
        losses.pseudo_label(torch.zeros(1, 1, 1, dtype=torch.long), px(0.0, 1.0, 2.0), torch.zeros(2))
    with pytest.raises(ValueError, match="upsample the logits"):
        losses.pseudo_label(torch.zeros(1, 2, 2, dtype=torch.long), px(0.0, 1.0), torch.zeros(2))


# --- PLOP: Local POD -----------------------------------------------------------------------


def grid(*rows: list[float]) -> torch.Tensor:
    """One image, one channel: [1, 1, h, w]."""
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), -1)


def test_local_pod_by_hand_on_a_2x2_map() -> None:
    new = grid([1.0, 2.0], [3.0, 4.0]).requires_grad_()
    old = grid([1.0, 1.0], [1.0, 1.0]).requires_grad_()
    # d = new^2 - old^2 = [[0, 3], [8, 15]]. 1x1 grid: row means [1.5, 11.5], column means [4, 9].
    one_grid = 1.5**2 + 11.5**2 + 4**2 + 9**2  # 231.5
    loss = losses.local_pod([new], [old], scales=1)
    assert loss.item() == pytest.approx(math.sqrt(one_grid), rel=1e-6)
    loss.backward()
    assert old.grad is None and new.grad is not None
    # 2x2 grid: one-pixel windows, whose row and column means are the pixel: 2 * (0 + 9 + 64 + 225).
    two_grids = losses.local_pod([new], [old], scales=2)
    assert two_grids.item() == pytest.approx(math.sqrt(one_grid + 2 * 298), rel=1e-6)


def test_local_pod_is_zero_with_a_zero_gradient_for_identical_features() -> None:
    new = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = losses.local_pod([new], [new.detach().clone()])
    assert loss.item() == 0.0
    loss.backward()
    assert new.grad.abs().sum().item() == 0.0  # not NaN: the new model starts as a copy of the old


def test_local_pod_averages_images_then_maps() -> None:
    first_new = torch.cat([grid([1.0, 2.0], [3.0, 4.0]), grid([5.0, 6.0], [7.0, 8.0])])  # [2, 1, 2, 2]
    first_old = torch.cat([grid([1.0, 1.0], [1.0, 1.0]), grid([5.0, 6.0], [7.0, 8.0])])  # image 2: no change
    # A 1x1 map with two channels: d = [9 - 1, 0 - 4]; its row and column means are d itself.
    second_new = torch.tensor([3.0, 0.0]).view(1, 2, 1, 1).repeat(2, 1, 1, 1)
    second_old = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).repeat(2, 1, 1, 1)
    got = losses.local_pod([first_new, second_new], [first_old, second_old], scales=1)
    expected = (math.sqrt(231.5) / 2 + math.sqrt(2 * (64 + 16))) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_local_pod_drops_the_remainder_of_an_uneven_grid_as_plop() -> None:
    old = grid([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    new = grid([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 2.0])  # d = 3 at the bottom-right pixel only
    # 1x1 grid: row 3 and column 3 means 1 -> sqrt(2); the 2x2 grid's 1x1 windows miss that pixel.
    assert losses.local_pod([new], [old], scales=2).item() == pytest.approx(math.sqrt(2), rel=1e-6)


def test_local_pod_names_bad_inputs() -> None:
    with pytest.raises(ValueError, match="1 and 2"):
        losses.local_pod([torch.zeros(1, 1, 4, 4)], [torch.zeros(1, 1, 4, 4)] * 2)
    with pytest.raises(ValueError, match=r"new \(1, 2, 4, 4\) and old \(1, 3, 4, 4\)"):
        losses.local_pod([torch.zeros(1, 2, 4, 4)], [torch.zeros(1, 3, 4, 4)])
    # A 2x2 map has no 4x4 grid: that grid is skipped, the 1x1 and 2x2 ones count.
    small_new, small_old = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    assert torch.isclose(losses.local_pod([small_new], [small_old]),
                         losses.local_pod([small_new], [small_old], scales=2))


# --- SSUL-style binary cross-entropy -------------------------------------------------------


def test_binary_cross_entropy_by_hand() -> None:
    # Pixels [0, log 3] labelled 1, [log 3, log 3] labelled 0, a void one. sigmoid(log 3) = 3/4, so
    # -log sigmoid(log 3) = log(4/3), -log(1 - sigmoid(log 3)) = log 4, and both are log 2 at 0.
    logits = torch.cat([px(0.0, math.log(3)), px(math.log(3), math.log(3)), px(9.0, -9.0)], dim=3)
    labels = torch.tensor([[[1, 0, 255]]])
    both = (math.log(2) + math.log(4 / 3) + math.log(4 / 3) + math.log(4)) / 4
    assert losses.binary_cross_entropy(logits, labels, [0, 1]).item() == pytest.approx(both, rel=1e-6)
    # SSUL sums the channels: 2 * both. On channel 1 alone the label-0 pixel is a negative.
    new = logits.clone().requires_grad_()
    loss = losses.binary_cross_entropy(new, labels, [1])
    assert loss.item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2, rel=1e-6)
    loss.backward()  # d/dz = (sigmoid(z) - target) / 2 on channel 1, nothing elsewhere
    assert new.grad[0, 1, 0].tolist() == pytest.approx([(0.75 - 1) / 2, 0.75 / 2, 0.0])
    assert new.grad[0, 0].abs().sum().item() == 0.0


def test_binary_cross_entropy_edge_cases() -> None:
    logits = px(0.0, 1.0, 2.0).requires_grad_()
    void = losses.binary_cross_entropy(logits, torch.full((1, 1, 1), 255), [1, 2])
    assert void.item() == 0.0 and void.requires_grad
    with pytest.raises(ValueError, match=r"indices in \[0, 3\), got \[1, 3\]"):
        losses.binary_cross_entropy(logits, torch.zeros(1, 1, 1, dtype=torch.long), [1, 3])
    with pytest.raises(ValueError, match="non-empty"):
        losses.binary_cross_entropy(logits, torch.zeros(1, 1, 1, dtype=torch.long), [])
    with pytest.raises(ValueError, match="upsample the logits"):
        losses.binary_cross_entropy(logits, torch.zeros(1, 2, 2, dtype=torch.long), [1])


def test_binary_cross_entropy_pos_weights_scale_the_positives_only() -> None:
    # One pixel labelled 1, channels (0, 1), logits 0: every term is log 2 before weighting.
    logits, labels = torch.zeros(1, 2, 1, 1), torch.tensor([[[1]]])
    plain = losses.binary_cross_entropy(logits, labels, (0, 1))
    assert plain.item() == pytest.approx(math.log(2))
    # Channel 1's target is 1 (weighted 3), channel 0's is 0 (a negative: unweighted): (log 2 + 3 log 2) / 2.
    weighted = losses.binary_cross_entropy(logits, labels, (0, 1), pos_weights=torch.tensor([5.0, 3.0]))
    assert weighted.item() == pytest.approx(2 * math.log(2))
    with pytest.raises(ValueError, match=r"pos_weights must be \[2\]"):
        losses.binary_cross_entropy(logits, labels, (0, 1), pos_weights=torch.ones(3))
