"""Body of GET /models/{name}/compare: two versions' per-class IoU side by side (fractions in [0, 1])."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.schemas.versions import MeanIou, PromotionDecision


class VersionBrief(BaseModel):
    version: int
    parent: int | None
    method: str
    miou: MeanIou
    aliases: list[str]


class ClassDeltaPublic(BaseModel):
    index: int
    name: str
    hex: str = Field(description="The class's display colour (as in GET /models/{name}/classes).")
    iou_a: float | None = Field(description="None: not scored in a, or not one of a's classes (in_a).")
    iou_b: float | None
    delta: float | None = Field(description="iou_b - iou_a where both are scored; negative: b is worse.")
    in_a: bool = Field(description="Whether version a knows the class.")
    in_b: bool


class ComparisonPublic(BaseModel):
    model: str
    a: VersionBrief
    b: VersionBrief
    classes: list[ClassDeltaPublic] = Field(description="The largest drop first, then gains, then classes "
                                                        "without a delta.")
    verdict: PromotionDecision = Field(description=(
        "Whether the promotion policy lets b replace a in production: its forgetting checks with a as the "
        "reference, and a failed check for every class of a that b does not know."))
