"""Training methods as small pluggable pieces, not branches in the trainer.

A ``Piece`` owns its settings and hooks into the loop (in the spirit of Avalanche's plugins):
``setup`` once before the optimizer is built, ``train_mode`` each time the trainer puts the model
in training mode, and ``loss`` each step, returning its already-weighted terms. A ``Method`` is a
named list of pieces; the trainer only ever calls the method.

Method names (ILT = Michieli & Zanuttigh, MiB = Cermelli et al.; see docs/method-engine.md):

==========  =============================================  ===========================
name        total loss                                     teacher / classifier init
==========  =============================================  ===========================
ft, joint   L_CE  (joint = ft on all data: the runner's    no / random
            business)
ld          L_CE + lambda_D * L'_D                         yes / random
le          L_CE + lambda_E * L'_E                         yes / random
ef          L_CE, encoder frozen (E_F)                     no / random
ef+ld       L_CE + lambda_D * L'_D, encoder frozen         yes / random
ld+le       L_CE + lambda_D * L'_D + lambda_E * L'_E       yes / random
mib         unbiased CE + lambda_U * unbiased KD           yes / "mib"
==========  =============================================  ===========================

Defaults: lambda_D = 1 and lambda_E = 50, the ILT authors' code, with L'_D in the paper's form
(a sum over old classes; MiB's ILT re-implementation uses 100/100 with its class-averaged
normalisation). lambda_U = 10 with the class-averaged unbiased KD: MiB's published setting.

``names.DEFAULT_METHOD`` (``mib``) is what a task gets when it names no method; the default weights
live with the engine's other defaults in ``config``.
``num_old_classes`` counts the previous model's channels (background included). With 0 there
is no previous model (step 0): every method then trains with plain L_CE, as in both papers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from services.labels import BACKGROUND_INDEX
from services.learning import losses
from services.learning.config import (
    DEFAULT_LAMBDA_D,
    DEFAULT_LAMBDA_E,
    DEFAULT_LAMBDA_POD,
    DEFAULT_LAMBDA_U,
    DEFAULT_LD_FORM,
    LD_FORMS,
    WEIGHT_NAMES,
)
from services.learning.growth import classifier_convs
from services.learning.names import METHODS
from services.learning.zoo import SegModel, SegOutput


class Piece:
    """One ingredient of a method. Subclasses override the hooks they need."""

    needs_teacher: bool = False
    needs_calibration: bool = False  # observe the teacher on the step's images before training

    def setup(self, model: SegModel, teacher: SegModel | None) -> None:
        """Once per training run, before the optimizer collects the trainable parameters."""

    def observe(self, teacher_out: SegOutput, labels: Tensor) -> None:
        """Calibration: the teacher's outputs on one batch of the step's training images, and
        their labels [N, H, W]."""

    def end_calibration(self) -> None:
        """Calibration: every batch was observed."""

    def train_mode(self, model: SegModel) -> None:
        """After every ``model.train()`` call of the trainer."""

    def after_step(self, model: SegModel) -> None:
        """After every optimizer step."""

    def set_class_weights(self, weights: Tensor) -> None:
        """Per-channel weights [C] for the classification loss (``balance.class_weights``)."""

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        """Weighted loss terms of one step: out (and teacher_out) logits [N, C, H, W] at the
        label size, labels [N, H, W] long, 255 = ignore."""
        return {}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class _Classification(Piece):
    """A classification loss, class-weighted when the trainer sets weights."""

    class_weights: Tensor | None = None

    def set_class_weights(self, weights: Tensor) -> None:
        self.class_weights = weights


class CrossEntropy(_Classification):
    """L_CE over the step's labels (255 ignored)."""

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        return {"ce": losses.cross_entropy(out.logits, labels, class_weights=self.class_weights)}


class UnbiasedCrossEntropy(_Classification):
    """MiB's unbiased CE: background-labelled pixels may be any old class."""

    def __init__(self, old_classes: int) -> None:
        self.old_classes = old_classes

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        return {"unce": losses.unbiased_cross_entropy(out.logits, labels, self.old_classes,
                                                      class_weights=self.class_weights)}


class _TeacherPiece(Piece):
    needs_teacher = True

    def _teacher(self, teacher_out: SegOutput | None) -> SegOutput:
        if teacher_out is None:
            raise ValueError(f"{type(self).__name__} needs the previous model's outputs, got none")
        return teacher_out


class OutputDistillation(_TeacherPiece):
    """lambda_D * L'_D (ILT eq. 3); lambda_D = 1 by default (ILT authors' code).

    form: "paper" (default, ILT eq. 3) or "mib" (MiB's re-implementation: softmax over the old
    channels only, averaged over them; use it with a larger lambda, MiB uses 100)."""

    def __init__(self, lambda_d: float = DEFAULT_LAMBDA_D, form: str = DEFAULT_LD_FORM) -> None:
        if form not in LD_FORMS:
            raise ValueError(f"ld_form must be one of {', '.join(LD_FORMS)}, got {form!r}")
        self.lambda_d = _weight("lambda_d", lambda_d)
        self.form = form

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        old = self._teacher(teacher_out)
        return {"ld": self.lambda_d * losses.output_distillation(out.logits, old.logits, form=self.form)}


class FeatureDistillation(_TeacherPiece):
    """lambda_E * L'_E (ILT eq. 4, MSE of encoder outputs); lambda_E = 50 (ILT authors' code)."""

    def __init__(self, lambda_e: float = DEFAULT_LAMBDA_E) -> None:
        self.lambda_e = _weight("lambda_e", lambda_e)

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        old = self._teacher(teacher_out)
        return {"le": self.lambda_e * losses.feature_distillation(out.features, old.features)}


class UnbiasedDistillation(_TeacherPiece):
    """lambda_U * MiB's unbiased KD; lambda_U = 10 with MiB's class-averaged form (its setting)."""

    def __init__(self, lambda_u: float = DEFAULT_LAMBDA_U, class_mean: bool = True) -> None:
        self.lambda_u = _weight("lambda_u", lambda_u)
        self.class_mean = class_mean

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        old = self._teacher(teacher_out)
        kd = losses.unbiased_distillation(out.logits, old.logits, class_mean=self.class_mean)
        return {"ukd": self.lambda_u * kd}


class _PseudoLabels(_TeacherPiece, _Classification):
    """Background-labelled pixels relabelled with the teacher's confident predictions (PLOP).

    Confidence: the teacher's normalised entropy below its predicted class's threshold; the
    thresholds (``losses.entropy_thresholds``) come from one calibration pass of the teacher over
    the step's training images, a pixel in 16 sampled (a 4x4 stride) to bound the memory."""

    needs_calibration = True
    SAMPLE_STRIDE = 4

    def __init__(self, old_classes: int) -> None:
        self.old_classes = old_classes
        self.thresholds: Tensor | None = None
        self._entropy: list[Tensor] = []
        self._predicted: list[Tensor] = []

    def observe(self, teacher_out: SegOutput, labels: Tensor) -> None:
        step = self.SAMPLE_STRIDE
        logits = teacher_out.logits[:, :, ::step, ::step].float()
        background = labels[:, ::step, ::step] == BACKGROUND_INDEX  # PLOP's statistics: these pixels only
        self._entropy.append(losses.normalized_entropy(logits)[background].cpu())
        self._predicted.append(logits.argmax(dim=1)[background].cpu())

    def end_calibration(self) -> None:
        entropy, predicted = torch.cat(self._entropy), torch.cat(self._predicted)
        self.thresholds = losses.entropy_thresholds(entropy, predicted, self.old_classes)
        self._entropy, self._predicted = [], []

    def pseudo_labels(self, teacher_out: SegOutput | None, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(labels with pseudo-labels [N, H, W], PLOP's per-image adaptive factor [N])."""
        old = self._teacher(teacher_out)
        if self.thresholds is None:
            raise RuntimeError(f"{type(self).__name__} needs a calibration pass before training")
        return losses.pseudo_label(labels, old.logits, self.thresholds.to(labels.device))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(old_classes={self.old_classes})"


class PseudoLabelCrossEntropy(_PseudoLabels):
    """PLOP's classification loss: L_CE on the pseudo-labelled masks, each image's pixel losses
    scaled by its adaptive factor (the share of its background pixels that got a label)."""

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        pseudo, factor = self.pseudo_labels(teacher_out, labels)
        return {"plce": losses.cross_entropy(out.logits, pseudo, class_weights=self.class_weights,
                                             image_weights=factor)}


class PseudoLabelBinaryCrossEntropy(_PseudoLabels):
    """The frozen-old method's loss: per-class binary cross-entropy of the trainable channels
    (background and the new classes) on the pseudo-labelled masks; with class weights, each
    channel's positive pixels weigh its class weight over background's."""

    def __init__(self, old_classes: int) -> None:
        super().__init__(old_classes)
        self.channels: tuple[int, ...] = ()

    def setup(self, model: SegModel, teacher: SegModel | None) -> None:
        self.channels = (0, *range(self.old_classes, model.num_classes))

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        pseudo, _ = self.pseudo_labels(teacher_out, labels)
        pos = None
        if self.class_weights is not None:
            # A channel's positives weigh its class weight relative to background's: a rare new
            # class's few pixels count as much as the background's many.
            weights = self.class_weights.to(out.logits.device)
            pos = weights[list(self.channels)] / weights[0]
        return {"bce": losses.binary_cross_entropy(out.logits, pseudo, self.channels, pos_weights=pos)}


class LocalPOD(_TeacherPiece):
    """PLOP's Local POD: lambda_pod * sqrt(classes / new classes) * multi-scale pooled distillation
    of every encoder stage (``SegOutput.stages``); lambda_pod = 0.01, PLOP's setting."""

    def __init__(self, old_classes: int, lambda_pod: float = DEFAULT_LAMBDA_POD) -> None:
        self.old_classes = old_classes
        self.lambda_pod = _weight("lambda_pod", lambda_pod)
        self.factor = 1.0

    def setup(self, model: SegModel, teacher: SegModel | None) -> None:
        # PLOP's adaptive factor: the fewer the new classes, the more the old knowledge weighs.
        self.factor = math.sqrt(model.num_classes / (model.num_classes - self.old_classes))

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        old = self._teacher(teacher_out)
        pod = losses.local_pod(out.stages, old.stages)
        return {"pod": self.lambda_pod * self.factor * pod}


class FreezeOld(Piece):
    """Everything the parent learnt stays fixed: the encoder, the decoder, every BatchNorm and the
    classifier rows of the old foreground classes. Trainable: the final classifier conv(s)'
    background row and new rows. Old rows are restored after each optimizer step, so neither
    weight decay nor momentum moves them."""

    def __init__(self, old_classes: int) -> None:
        self.old_classes = old_classes
        self._kept: list[tuple[nn.Conv2d, Tensor, Tensor]] = []

    def setup(self, model: SegModel, teacher: SegModel | None) -> None:
        model.requires_grad_(False)
        self._kept = []
        for parent, name in classifier_convs(model):
            conv = getattr(parent, name)
            conv.requires_grad_(True)
            rows = slice(1, self.old_classes)
            self._kept.append((conv, conv.weight.detach()[rows].clone(), conv.bias.detach()[rows].clone()))

    def train_mode(self, model: SegModel) -> None:
        model.eval()  # BatchNorm statistics and dropout as the parent had them

    @torch.no_grad()
    def after_step(self, model: SegModel) -> None:
        for conv, weight, bias in self._kept:
            conv.weight[1 : self.old_classes] = weight.to(conv.weight.device)
            conv.bias[1 : self.old_classes] = bias.to(conv.bias.device)


class FreezeEncoder(Piece):
    """E_F: the encoder keeps the previous model's weights; only the decoder learns.

    Freezing covers the BatchNorm running statistics too: the encoder stays in eval mode while
    the rest trains, otherwise its normalisation would drift from the previous model's.
    """

    def setup(self, model: SegModel, teacher: SegModel | None) -> None:
        for p in model.encoder_parameters():
            p.requires_grad_(False)

    def train_mode(self, model: SegModel) -> None:
        model.backbone.eval()


@dataclass(frozen=True)
class Method:
    """A named combination of pieces. ``loss`` returns every term plus their sum under "loss"."""

    name: str
    num_old_classes: int
    pieces: tuple[Piece, ...]
    classifier_init: str = "random"  # how grow_classifier should initialise the new rows

    @property
    def needs_teacher(self) -> bool:
        return any(p.needs_teacher for p in self.pieces)

    @property
    def needs_calibration(self) -> bool:
        return any(p.needs_calibration for p in self.pieces)

    @torch.no_grad()
    def calibrate(self, teacher: SegModel, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """One pass of the frozen teacher over the step's (images, labels) batches, shown to the
        pieces that ask."""
        pieces = [p for p in self.pieces if p.needs_calibration]
        teacher.eval()
        for images, labels in batches:
            out = teacher(images)
            for piece in pieces:
                piece.observe(out, labels)
        for piece in pieces:
            piece.end_calibration()

    def setup(self, model: SegModel, teacher: SegModel | None) -> None:
        """Check the models fit the method, then let each piece prepare the model."""
        if self.needs_teacher:
            if teacher is None:
                raise ValueError(f"method {self.name!r} needs the previous model as teacher, got none")
            if teacher.num_classes != self.num_old_classes:
                raise ValueError(
                    f"method {self.name!r} was built for {self.num_old_classes} old classes but the teacher "
                    f"has {teacher.num_classes} output channels"
                )
            if teacher.arch != model.arch:
                raise ValueError(f"teacher architecture {teacher.arch!r} differs from the model's {model.arch!r}")
        if self.num_old_classes and model.num_classes <= self.num_old_classes:
            raise ValueError(
                f"the model has {model.num_classes} output channels, not more than the {self.num_old_classes} "
                "old classes: grow its classifier (growth.grow_classifier) before training a new step"
            )
        for piece in self.pieces:
            piece.setup(model, teacher)

    def train_mode(self, model: SegModel) -> None:
        for piece in self.pieces:
            piece.train_mode(model)

    def after_step(self, model: SegModel) -> None:
        for piece in self.pieces:
            piece.after_step(model)

    def set_class_weights(self, weights: Tensor) -> None:
        for piece in self.pieces:
            piece.set_class_weights(weights)

    def loss(self, out: SegOutput, teacher_out: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        """{term name: weighted scalar, ..., "loss": their sum}."""
        terms: dict[str, Tensor] = {}
        for piece in self.pieces:
            terms.update(piece.loss(out, teacher_out, labels))
        terms["loss"] = sum(terms.values())  # type: ignore[assignment]
        return terms


def build_method(name: str, num_old_classes: int, *, ld_form: str | None = None, **weights: float | None) -> Method:
    """The method ``name`` (one of ``METHODS``) for a step after ``num_old_classes`` classes.

    weights: ``lambda_d`` (default 1), ``lambda_e`` (50), ``lambda_u`` (10). None means the
    default; an unknown name, or a weight the method does not use, is a ValueError.
    ld_form: the form of L'_D, "paper" (default) or "mib" (see ``OutputDistillation``).
    """
    if ld_form is not None and "lambda_d" not in _WEIGHTS_USED.get(name, ()):
        raise ValueError(f"method {name!r} has no output distillation, so ld_form does not apply")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    if isinstance(num_old_classes, bool) or not isinstance(num_old_classes, int) or num_old_classes < 0:
        raise ValueError(f"num_old_classes must be an int >= 0, got {num_old_classes!r}")
    unknown = sorted(set(weights) - set(WEIGHT_NAMES))
    if unknown:
        raise ValueError(f"unknown loss weight(s) {', '.join(unknown)}; known: {', '.join(WEIGHT_NAMES)}")
    given = {k: v for k, v in weights.items() if v is not None}
    unused = sorted(set(given) - set(_WEIGHTS_USED[name]))
    if unused:
        raise ValueError(f"method {name!r} does not use {', '.join(unused)}")
    if num_old_classes == 0:
        # Step 0: no previous model, nothing to distil or freeze.
        return Method(name, 0, (CrossEntropy(),))
    pieces = _pieces(name, num_old_classes, given, ld_form or DEFAULT_LD_FORM)
    return Method(name, num_old_classes, pieces, "mib" if name in MIB_INIT_METHODS else "random")


_WEIGHTS_USED: dict[str, Sequence[str]] = {
    "ft": (), "joint": (), "ef": (), "ld": ("lambda_d",), "ef+ld": ("lambda_d",),
    "le": ("lambda_e",), "ld+le": ("lambda_d", "lambda_e"), "mib": ("lambda_u",),
    "plop": ("lambda_pod",), "frozen-old": (),
}
# Methods whose new classifier rows start as MiB's (background's row, shared probability).
MIB_INIT_METHODS = ("mib", "plop", "frozen-old")


def _pieces(name: str, num_old_classes: int, weights: dict[str, float], ld_form: str) -> tuple[Piece, ...]:
    if name == "mib":
        return (UnbiasedCrossEntropy(num_old_classes), UnbiasedDistillation(weights.get("lambda_u", DEFAULT_LAMBDA_U)))
    if name == "plop":
        return (PseudoLabelCrossEntropy(num_old_classes),
                LocalPOD(num_old_classes, weights.get("lambda_pod", DEFAULT_LAMBDA_POD)))
    if name == "frozen-old":
        return (FreezeOld(num_old_classes), PseudoLabelBinaryCrossEntropy(num_old_classes))
    pieces: list[Piece] = [CrossEntropy()]
    if name in ("ef", "ef+ld"):
        pieces.append(FreezeEncoder())
    if name in ("ld", "ef+ld", "ld+le"):
        pieces.append(OutputDistillation(weights.get("lambda_d", DEFAULT_LAMBDA_D), ld_form))
    if name in ("le", "ld+le"):
        pieces.append(FeatureDistillation(weights.get("lambda_e", DEFAULT_LAMBDA_E)))
    return tuple(pieces)


def _weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)
