"""The auto-promotion policy: when a freshly trained version becomes ``production`` by itself.

A new version is promoted when ALL of these hold (otherwise it waits as a candidate, and the
decision's ``reasons`` say which check failed, with the numbers):

1. Automatic promotion is on: the model's ``auto_promote`` where set, else ``STRATA_AUTO_PROMOTE``.
2. Production has not moved under it: no version is in production, or production is the new
   version's parent (it was trained from what is being served). If somebody promoted or rolled
   back while it trained, replacing their choice automatically would undo a human decision.
3. Forgetting is bounded (versions with a parent only): no old class (a class of the parent) lost
   more than the model's ``promote_max_old_miou_drop`` (default ``STRATA_PROMOTE_MAX_OLD_MIOU_DROP``) IoU points against the parent, and neither did
   the mean IoU over the old classes (the mean of those per-class drops, over classes scored in
   both versions; a mean never exceeds its worst term, so this check is reported for its number
   and cannot fail on its own). If no old class could be compared at all, forgetting is unmeasured and the
   version is held for a person to decide.

The decision is taken once, when the version is recorded, and stored with it: a version shows why it
did or did not become production at that moment (versions recorded before decisions were stored get
one recomputed with the current settings). ``judge_replacement`` answers the other question, asked
before a person moves production by hand: may this version replace that one now?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from services.config import Settings
from services.evaluation.metrics import forgetting_vs, mean

TOLERANCE_POINTS = 1e-9  # a drop exactly at the limit passes despite float rounding
# IoU values are fractions in [0, 1] everywhere in storage and the API; "points" (IoU x 100) are
# used only where the policy talks to people, as its threshold does.
POINTS_PER_IOU = 100.0

ClassIous = Mapping[int, float | None]


AUTO_PROMOTE_SETTING = "STRATA_AUTO_PROMOTE=false"
MAX_DROP_SETTING = "STRATA_PROMOTE_MAX_OLD_MIOU_DROP"
MODEL_SETTING = "the model's {}"


@dataclass(frozen=True)
class PromotionPolicy:
    auto_promote: bool
    max_old_drop_points: float
    # Where each value comes from, as the messages name it: the service's variable or the model's field.
    auto_promote_source: str = AUTO_PROMOTE_SETTING
    max_old_drop_source: str = MAX_DROP_SETTING

    @classmethod
    def from_settings(cls, settings: Settings) -> "PromotionPolicy":
        return cls(settings.auto_promote, settings.promote_max_old_miou_drop)

    def overridden(self, *, auto_promote: bool | None, max_old_drop_points: float | None) -> "PromotionPolicy":
        """This policy with a model's own settings (None: keep this one's)."""
        policy = self
        if auto_promote is not None:
            policy = replace(policy, auto_promote=auto_promote, auto_promote_source=MODEL_SETTING.format("auto_promote: false"))
        if max_old_drop_points is not None:
            policy = replace(policy, max_old_drop_points=max_old_drop_points,
                             max_old_drop_source=MODEL_SETTING.format("promote_max_old_miou_drop"))
        return policy


@dataclass(frozen=True)
class Candidate:
    """What the policy looks at: a version, its parent's scores and the production alias."""

    version: int
    parent: int | None
    production: int | None
    old_classes: Sequence[int]
    ious: ClassIous
    parent_ious: ClassIous
    names: Mapping[int, str] = field(default_factory=dict)

    def name(self, index: int) -> str:
        return repr(self.names.get(index, f"class {index}"))


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    summary: str
    reasons: tuple[str, ...]  # one sentence per check, failed checks first
    old_miou_drop_points: float | None = None
    worst_old_class: int | None = None
    worst_old_class_drop_points: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PromotionDecision":
        return cls(**{**d, "reasons": tuple(d["reasons"])})

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote, "summary": self.summary, "reasons": list(self.reasons),
            "old_miou_drop_points": self.old_miou_drop_points, "worst_old_class": self.worst_old_class,
            "worst_old_class_drop_points": self.worst_old_class_drop_points,
        }


def decide(policy: PromotionPolicy, c: Candidate) -> PromotionDecision:
    """Apply the policy to a candidate; every check is reported, failed ones first."""
    checks = [_check_switch(policy), _check_lineage(c)]
    drops = _old_class_drops(c)
    if c.parent is not None:
        checks += _check_forgetting(policy, c, drops)
    failed = [msg for ok, msg in checks if not ok]
    passed = [msg for ok, msg in checks if ok]
    summary = (f"v{c.version} may be production" if not failed
               else f"v{c.version} waits as a candidate: {failed[0]}")
    return _decision(not failed, summary, failed + passed, drops)


def judge_replacement(policy: PromotionPolicy, c: Candidate) -> PromotionDecision:
    """Whether ``c.version`` may replace ``c.parent`` in production by hand: the forgetting checks of
    the policy, with ``c.parent`` as the reference (the version it replaces, whatever the lineage),
    and a failed check for every class of the reference that ``c.version`` does not know (a
    rollback past the version that introduced it). The switch and lineage checks concern automatic
    promotion only, so they are left out."""
    known = set(c.ious)
    lost = [k for k in c.old_classes if k not in known]
    checks = [(False, f"v{c.version} does not know {', '.join(c.name(k) for k in lost)}, which v{c.parent} "
                      "segments: requests would get those pixels as other classes")] if lost else []
    drops = _old_class_drops(c)
    checks += _check_forgetting(policy, replace(c, old_classes=[k for k in c.old_classes if k in known]), drops)
    failed = [msg for ok, msg in checks if not ok]
    passed = [msg for ok, msg in checks if ok]
    summary = (f"v{c.version} may replace v{c.parent}" if not failed
               else f"v{c.version} would not pass the policy against v{c.parent}: {failed[0]}")
    return _decision(not failed, summary, failed + passed, drops)


def _decision(promote: bool, summary: str, reasons: list[str], drops: dict[int, float]) -> PromotionDecision:
    worst = max(drops, key=drops.__getitem__) if drops else None
    return PromotionDecision(
        promote=promote, summary=summary, reasons=tuple(reasons), old_miou_drop_points=mean(drops.values()),
        worst_old_class=worst, worst_old_class_drop_points=drops[worst] if worst is not None else None,
    )


def _check_switch(policy: PromotionPolicy) -> tuple[bool, str]:
    if policy.auto_promote:
        return True, "automatic promotion is on"
    return False, f"automatic promotion is off ({policy.auto_promote_source}): promote it by hand"


def _check_lineage(c: Candidate) -> tuple[bool, str]:
    if c.production is None:
        return True, "no version is in production yet"
    if c.production == c.version:
        return True, f"v{c.version} is production"
    if c.parent is not None and c.production == c.parent:
        return True, f"its parent v{c.parent} is production"
    trained_from = f"its parent v{c.parent}" if c.parent is not None else "it is a new base model"
    return False, (f"production is v{c.production}, not {trained_from} (production moved while it trained?); "
                   "promote it by hand if it should replace production")


def _old_class_drops(c: Candidate) -> dict[int, float]:
    """{old class: IoU points lost vs the parent} for old classes scored in both versions."""
    old = set(c.old_classes)
    return {k: v * POINTS_PER_IOU for k, v in forgetting_vs(c.parent_ious, c.ious).items() if k in old}


def _check_forgetting(policy: PromotionPolicy, c: Candidate, drops: dict[int, float]) -> list[tuple[bool, str]]:
    limit = policy.max_old_drop_points
    if c.old_classes and not drops:
        return [(False, f"forgetting cannot be measured: no old class has an IoU in both v{c.version} "
                        f"and its parent v{c.parent}")]
    checks = []
    too_far = sorted((k for k, d in drops.items() if d > limit + TOLERANCE_POINTS), key=lambda k: -drops[k])
    for k in too_far:
        checks.append((False, f"old class {c.name(k)} lost {drops[k]:.2f} IoU points against v{c.parent} "
                              f"(limit {limit:g}, {policy.max_old_drop_source})"))
    if drops and not too_far:
        worst = max(drops, key=drops.__getitem__)
        checks.append((True, f"no old class lost more than {limit:g} IoU points against v{c.parent} "
                             f"(largest drop: {c.name(worst)}, {drops[worst]:.2f})"))
    mean_drop = mean(drops.values())
    if mean_drop is not None:
        ok = mean_drop <= limit + TOLERANCE_POINTS
        verdict = "within" if ok else "beyond"
        checks.append((ok, f"old-class mIoU dropped {mean_drop:.2f} points against v{c.parent}, {verdict} "
                           f"the limit of {limit:g}"))
    return checks
