"""Bodies of tasks: the spec a client sends (multipart field ``spec`` of POST /models/{name}/tasks)
and the task it gets back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.jobs.spec import TaskSpec


class TaskCreate(TaskSpec):
    """The JSON in the multipart field ``spec`` of POST /models/{name}/tasks (validated by services.jobs.spec)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"classes": ["car", "person"], "epochs": 30, "mask_format": "index"},
        {"classes": ["bicycle"], "mask_format": "palette", "palette": {"bicycle": [0, 128, 192], "car": [64, 0, 128]},
         "also_labelled": ["car"], "hyperparameters": {"lr": 0.001, "lambda_d": 10}},
        {"classes": ["car", "person"], "format": "cvat_mask", "other_labels": "ignore"},
        {"classes": ["car"], "also_labelled": ["road"], "format": "coco"},
    ]})


class ProgressPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int | None = Field(description="Current epoch, from 1.")
    epochs: int | None
    step: int | None = Field(description="Step within the epoch, from 1.")
    steps: int | None = Field(description="Steps per epoch.")
    loss: float | None
    images_per_s: float | None
    eta_s: float | None = Field(description="Estimated seconds left (running tasks only).")
    resumed_from_epoch: int | None = Field(None, description="Epochs already done when this attempt started.")
    updated_at: datetime | None
    history: list[tuple[float, float]] = Field(
        [], description="loss over the run: [fractional epoch, loss], at most 400 points, thinned evenly")


class ItemCounts(BaseModel):
    train: int
    val: int


class ImportIssue(BaseModel):
    kind: str = Field(description="no_new_classes | empty_masks | unknown_labels | unknown_colours | "
                                  "overlaps_resolved | unused_files")
    message: str = Field(description="What the kind means.")
    count: int = Field(description="Images (or files) concerned.")
    examples: list[str] = Field(description="The first few of them, by stem (or archive path).")
    labels: dict[str, int] | None = Field(None, description="unknown_labels, unknown_colours: images per label.")
    pixels: int | None = Field(None, description="Pixels concerned, where counted (overlaps, unknown labels).")


class ImportReportPublic(BaseModel):
    format: str = Field(description="The format the upload was read as.")
    images: int
    class_images: dict[str, int] = Field(description="Images whose mask shows each class (new and also_labelled).")
    issues: list[ImportIssue]


class TimingsPublic(BaseModel):
    """Where a task's time went, in seconds; a phase not reached (or not measured, for tasks
    recorded before timings existed) is null. Phases are the last attempt's."""

    ingest_s: float | None = Field(None, description="Reading, checking and storing the upload (after its receipt).")
    queued_s: float | None = Field(None, description="From the task's record to a worker's first start.")
    fetch_s: float | None = Field(None, description="Images, masks and the parent checkpoint to the worker, decoded.")
    train_s: float | None = Field(None, description="Training, calibration and BatchNorm statistics included.")
    score_s: float | None = Field(None, description="Scoring every known class on the validation images.")
    upload_s: float | None = Field(None, description="The new checkpoint to the object store.")
    record_s: float | None = Field(None, description="Recording the version, its metrics and aliases.")
    total_s: float | None = Field(None, description="Ingest plus the time from record to finish.")
    attempt: int | None = Field(None, description="The attempt the phases are from.")


class TaskPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model: str = Field(description="The model's name.")
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    classes: dict[str, int] = Field(description="The classes this task adds: name -> index in the model.")
    also_labelled: list[str]
    method: str | None
    architecture: str | None = Field(description="The model's architecture.")
    progress: ProgressPublic | None
    error: str | None
    model_version: int | None = Field(description="The version this task produced.")
    parent_version: int | None
    cancel_requested: bool
    attempts: int = Field(description="Times a worker started this task (> 1 after a redelivery).")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    items: ItemCounts
    import_report: ImportReportPublic | None = Field(
        None, description="What reading the upload found (tasks registered before reports existed: null).")
    timings: TimingsPublic | None = Field(None, description="Where the task's time went.")


def upload_openapi() -> dict[str, Any]:
    """The multipart request body of POST /tasks for the OpenAPI document (the route reads the
    body as a stream itself, so FastAPI cannot derive it)."""
    files = {"type": "array", "items": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["spec"],
            "properties": {
                "spec": {"type": "string", "description": "The task's spec as JSON (contentSchema).",
                         "contentMediaType": "application/json", "contentSchema": _inlined(TaskCreate),
                         "example": '{"classes": ["car", "person"]}'},
                "images": {**files, "description": "Images (PNG, JPEG, BMP, TIFF, WebP), paired with masks by file stem."},
                "masks": {**files, "description": "PNG masks: index (0 background, k = k-th class, 255 ignore) "
                                                  "or RGB palette colours."},
                "archive": {"type": "string", "format": "binary",
                            "description": "Instead of images + masks: one zip holding images/ and masks/, or an "
                                           "annotation tool's export as written (spec `format`: coco, coco_panoptic, "
                                           "cvat_mask, voc, cityscapes, label_studio; recognised when left out)."},
            },
        },
        "encoding": {"spec": {"contentType": "application/json"}},
    }}}}


def _inlined(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` substituted in place (it is embedded in a
    request body, where ``#/$defs/...`` references would not resolve)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)
