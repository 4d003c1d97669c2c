"""Bodies of /models and /classes. IoU values are fractions in [0, 1]; forgetting is an IoU
difference (positive = worse); the promotion policy speaks in points (IoU x 100)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class MeanIou(BaseModel):
    old: float | None = Field(description="Mean IoU over the parent's classes (None for a base model).")
    new: float | None = Field(description="Mean IoU over the classes this version added.")
    all: float | None


class Checkpoint(BaseModel):
    key: str
    sha256: str
    bytes: int


class ClassScore(BaseModel):
    index: int
    name: str
    role: str = Field(description="'old': a class of the parent; 'new': added by this version.")
    iou: float | None = Field(description="None: not scored (absent from its validation images).")
    tp: int | None
    fp: int | None
    fn: int | None
    forgetting: float | None = Field(description="Parent IoU minus this IoU (old classes).")
    forgetting_best: float | None = Field(description="Best IoU of any earlier version minus this IoU.")


class PromotionDecision(BaseModel):
    promote: bool = Field(description="Whether the policy lets this version be production.")
    summary: str
    reasons: list[str] = Field(description="Every check in words, failed ones first.")
    old_miou_drop_points: float | None
    worst_old_class: int | None
    worst_old_class_drop_points: float | None


class ModelSummary(BaseModel):
    version: int
    parent: int | None
    task_id: str
    architecture: str
    method: str
    num_classes: int
    miou: MeanIou
    aliases: list[str]
    created_at: datetime


class ModelDetail(ModelSummary):
    lineage: list[int] = Field(description="Versions from the base model down to this one.")
    hyperparameters: dict[str, Any]
    checkpoint: Checkpoint
    iou: dict[str, float | None] = Field(description="Per-class IoU by class name.")
    forgetting: dict[str, float] = Field(description="Per old class: parent IoU minus this IoU, by name.")
    classes: list[ClassScore]
    promotion: PromotionDecision = Field(
        description="The promotion policy's decision when this version was recorded, with its reasons.")


class Promoted(BaseModel):
    alias: str
    version: int
    previous: int | None


class LegendEntry(BaseModel):
    index: int = Field(description="The value of this class in a mask.")
    name: str
    color: list[int] = Field(description="[r, g, b] for display; fixed per class index.")
    hex: str


class ClassPublic(BaseModel):
    index: int
    name: str
    task_id: str | None = Field(description="The task that introduced the class (None: background).")
    created_at: datetime
