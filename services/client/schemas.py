"""What the client reads back: the API's answers as typed objects. Fields the client does not use
are kept (``extra="allow"``), so an older client reads a newer server's answers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

FINISHED = ("succeeded", "failed", "cancelled")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Progress(_Answer):
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        """How much of the training is done, 0..1 (0 until the first report)."""
        if not (self.epoch and self.epochs and self.steps):
            return 0.0
        return min(1.0, ((self.epoch - 1) * self.steps + (self.step or 0)) / (self.epochs * self.steps))


class Task(_Answer):
    id: str
    model: str
    status: str
    classes: dict[str, int]
    method: str | None = None
    architecture: str | None = None
    progress: Progress | None = None
    error: str | None = None
    model_version: int | None = None
    parent_version: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timings: dict[str, float | None] | None = None  # where the time went, in seconds (ingest_s, queued_s, ...)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class MeanIou(_Answer):
    old: float | None = None
    new: float | None = None
    all: float | None = None


class Version(_Answer):
    model: str
    version: int
    parent: int | None = None
    task_id: str
    architecture: str
    method: str
    num_classes: int
    miou: MeanIou
    aliases: list[str] = Field(default_factory=list)
    created_at: datetime


class ClassDelta(_Answer):
    index: int
    name: str
    iou_a: float | None = None
    iou_b: float | None = None
    delta: float | None = None
    in_a: bool
    in_b: bool


class Verdict(_Answer):
    promote: bool
    summary: str


class VersionBrief(_Answer):
    """A version as a comparison names it."""

    version: int
    parent: int | None = None
    method: str
    miou: MeanIou
    aliases: list[str] = Field(default_factory=list)


class Comparison(_Answer):
    model: str
    a: VersionBrief
    b: VersionBrief
    classes: list[ClassDelta]
    verdict: Verdict


class AliasMoved(_Answer):
    alias: str
    version: int
    previous: int | None = None


class Model(_Answer):
    name: str
    description: str | None = None
    architecture: str | None = None


class Download(_Answer):
    """A file the server answered (an export, a mask): where it was written and what it holds."""

    path: str
    bytes: int
    sha256: str | None = None
    model_version: int | None = None
