"""Bodies of a model's versions, aliases and classes. IoU values are fractions in [0, 1]; forgetting
is an IoU difference (positive = worse); the promotion policy speaks in points (IoU x 100)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from services.registry.versions import MAX_VERSION


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


class VersionSummary(BaseModel):
    model: str = Field(description="The model's name.")
    version: int = Field(description="1, 2, ... within the model.")
    parent: int | None
    task_id: str
    architecture: str
    method: str
    num_classes: int
    miou: MeanIou
    aliases: list[str]
    created_at: datetime
    checkpoint: Checkpoint
    promotion: PromotionDecision = Field(
        description="The promotion policy's decision when this version was recorded, with its reasons.")


class VersionDetail(VersionSummary):
    lineage: list[int] = Field(description="Versions from the base model down to this one.")
    hyperparameters: dict[str, Any]
    iou: dict[str, float | None] = Field(description="Per-class IoU by class name.")
    forgetting: dict[str, float] = Field(description="Per old class: parent IoU minus this IoU, by name.")
    classes: list[ClassScore]


class ScoreCell(BaseModel):
    version: int
    index: int = Field(description="The class's index in the model.")
    name: str
    role: str = Field(description="'old': a class of the version's parent; 'new': added by this version.")
    iou: float | None = Field(description="None: not scored (absent from its validation images).")
    forgetting: float | None = Field(description="The parent's IoU minus this IoU (old classes scored in both).")


class ScoreMatrix(BaseModel):
    model: str
    cells: list[ScoreCell] = Field(description="One per version and class it knows, in version then class order.")


class AliasPublic(BaseModel):
    name: str
    version: int
    updated_at: datetime


class AliasMove(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 3}]})

    version: StrictInt = Field(ge=1, le=MAX_VERSION, description="The version the alias will name.")


class AliasMoved(BaseModel):
    alias: str
    version: int
    previous: int | None = Field(description="The version it named before (None: it was not set).")


class ClassPublic(BaseModel):
    index: int = Field(description="The value of this class in the model's masks.")
    name: str
    color: list[int] = Field(description="[r, g, b] for display; fixed per class index.")
    hex: str
    task_id: str | None = Field(description="The task that introduced the class (None: background).")
    created_at: datetime


class SamplePublic(BaseModel):
    """A validation image of a version's lineage (its bytes: GET /models/{name}/items/{id}/image,
    its ground truth: .../mask)."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The dataset item's id.")
    task_id: str = Field(description="The task that uploaded it.")
    stem: str = Field(description="Its file name without the extension, as uploaded.")
    classes: list[str] = Field(description="The classes that task introduced (what its mask labels first).")
