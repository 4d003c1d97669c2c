"""Bodies of /models: a model (a named lineage), created, changed and shown with what it serves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.registry.models import MAX_DESCRIPTION_CHARS, MODEL_NAME_PATTERN, has_control_characters
from services.text import reordering_character


def _shows_as_written(text: str) -> str:
    if has_control_characters(text):
        raise ValueError("control characters are not allowed (line breaks and tabs are)")
    reordering = reordering_character(text)
    if reordering:
        raise ValueError(f"{reordering} is not allowed (it reorders the text after it)")
    return text


Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS), AfterValidator(_shows_as_written)]


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "street-cam-7", "description": "Entrance camera, new classes every month"}]})

    name: str = Field(pattern=f"^{MODEL_NAME_PATTERN}$", description=(
        "Unique, used in URLs: letters, digits, '.', '_' or '-', starting with a letter or digit; at most 64."))
    description: Description = ""


class ModelUpdate(BaseModel):
    """Only the fields sent change. A promotion setting set to null follows the service's setting again."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"auto_promote": False}, {"promote_max_old_miou_drop": 2.5, "description": "stricter"}]})

    description: Description | None = None
    auto_promote: bool | None = Field(None, description="Promote new versions that pass the policy by themselves "
                                                        "(null: STRATA_AUTO_PROMOTE).")
    promote_max_old_miou_drop: float | None = Field(None, ge=0, le=100, description=(
        "Largest IoU drop, in points, of any old class for automatic promotion (null: "
        "STRATA_PROMOTE_MAX_OLD_MIOU_DROP)."))


class PolicyPublic(BaseModel):
    auto_promote: bool = Field(description="In effect: the model's setting, else the service's.")
    max_old_miou_drop: float = Field(description="In effect, in IoU points.")


class LastTask(BaseModel):
    id: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    error: str | None


class ModelPublic(BaseModel):
    name: str
    description: str
    architecture: str | None = Field(description="Fixed by the model's first task (None before it).")
    created_at: datetime
    updated_at: datetime
    auto_promote: bool | None = Field(description="The model's own setting (None: the service's).")
    promote_max_old_miou_drop: float | None = Field(description="The model's own setting (None: the service's).")
    policy: PolicyPublic
    production: int | None = Field(description="The version /segment serves by default.")
    latest: int | None
    versions: int
    classes: int = Field(description="Classes the model knows of, background excluded.")
    pending_tasks: int = Field(description="Tasks queued or running.")
    last_task: LastTask | None
