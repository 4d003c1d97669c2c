"""The tables: models (named lineages), and within each model its tasks and their dataset items,
its classes, its versions with their metrics and exports, its aliases; API keys (and the models a
key is limited to), worker heartbeats, the audit log of admin actions, and webhook subscriptions
with their deliveries.

Everything a model owns carries ``model_id``: a class index, a version number and an alias name are
unique within their model only, so their keys are composite ``(model_id, ...)`` and every foreign
key between them includes ``model_id``: a version can only descend from a version of its own model,
score its own model's classes, and be named by its own model's aliases.

``tasks`` and ``model_versions`` point at each other (a task starts from a parent version and
produces a version; a version records the task that produced it). The two foreign keys from
``tasks`` are ``use_alter=True`` so ``create_all``/``drop_all`` and the migration can order the
tables: they are added after both tables exist and dropped before either goes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.db.base import Base, utcnow
from services.labels import IGNORE_INDEX


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A task not finished yet: it holds its model's queue (every layer asks this of the same rows).
PENDING_STATUSES = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value)


class ExportFormat(StrEnum):
    """What a version can be exported as (``GET .../versions/{v}/export?format=``, ``strata export``)."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    TRITON = "triton"  # a Triton model repository (zip): config.pbtxt and the ONNX model


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"


def _in(column: str, values: type[StrEnum]) -> str:
    """SQL for ``column IN ('a', 'b', ...)`` built from an enum, so the CHECK and Python agree."""
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


def new_task_id() -> str:
    return uuid.uuid4().hex


class Model(Base):
    """A named lineage: its own classes, versions, aliases, promotion settings and step order."""

    __tablename__ = "models"
    __table_args__ = {"sqlite_autoincrement": True}  # an id is never reused: object keys hold it

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Fixed by the model's first task (NULL until then).
    architecture: Mapped[str | None] = mapped_column(String(64))
    # The promotion policy of this model; NULL = the service's setting (STRATA_AUTO_PROMOTE, ...).
    auto_promote: Mapped[bool | None]
    promote_max_old_miou_drop: Mapped[float | None]
    # The highest version number ever recorded: numbers are never reused, even after a deletion
    # (a cached copy or a client's note of "version 3" must never mean other weights).
    last_version: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SemanticClass(Base):
    """A class of a model with its index in that model (assigned by us, never reused; 0 is
    background). The index is "global" across the model's versions, not across models."""

    __tablename__ = "classes"
    __table_args__ = (
        CheckConstraint(f"id >= 0 AND id <> {IGNORE_INDEX}", name="id_valid"),
        UniqueConstraint("model_id", "name"),
    )

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    # The task that introduced the class; NULL for background only.
    task_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("tasks.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    """One requested learning step (or other job) and its lifecycle."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_in("status", TaskStatus), name="status_valid"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        Index("ix_tasks_status_created_at", "status", "created_at"),
        Index("ix_tasks_model_id_created_at", "model_id", "created_at"),
        Index("ix_tasks_dispatched_at", "dispatched_at"),
        UniqueConstraint("model_id", "idempotency_key"),
        ForeignKeyConstraint(["model_id", "parent_version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_tasks_parent_version_model_versions", use_alter=True),
        ForeignKeyConstraint(["model_id", "model_version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_tasks_model_version_model_versions", use_alter=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_task_id)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    kind: Mapped[str] = mapped_column(String(32), default="train", server_default="train")
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.QUEUED.value)
    spec: Mapped[dict[str, Any]]
    progress: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))  # unique within the model
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    parent_version: Mapped[int | None]
    # The version this task produced (set in the same transaction that inserts the version).
    model_version: Mapped[int | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The outbox: NULL while the task's broker message is owed (sent after the commit, or by the
    # relay once the broker is back); see services/jobs/outbox.py.
    dispatched_at: Mapped[datetime | None]
    # What reading the upload found: its format, images per class, and issues such as images
    # without a new class or labels the spec does not name (services/data/formats/base.py).
    import_report: Mapped[dict[str, Any] | None]
    # Where the time went: ingest_s (the upload's reading and storing), then the last attempt's
    # phases in seconds (services/jobs/timings.py).
    timings: Mapped[dict[str, Any] | None]

    items: Mapped[list[DatasetItem]] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True, order_by="DatasetItem.id"
    )


class DatasetItem(Base):
    """One image/mask pair uploaded with a task; the bytes live in the object store."""

    __tablename__ = "dataset_items"
    __table_args__ = (
        UniqueConstraint("task_id", "stem"),
        CheckConstraint(_in("split", Split), name="split_valid"),
        CheckConstraint("width > 0 AND height > 0", name="size_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(36), ForeignKey("tasks.id", ondelete="CASCADE"))
    stem: Mapped[str] = mapped_column(String(255))
    split: Mapped[str] = mapped_column(String(8))
    image_key: Mapped[str] = mapped_column(String(512))
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_bytes: Mapped[int] = mapped_column(BigInteger)
    mask_key: Mapped[str] = mapped_column(String(512))
    mask_sha256: Mapped[str] = mapped_column(String(64))
    mask_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int]
    height: Mapped[int]

    task: Mapped[Task] = relationship(back_populates="items")


class ModelVersion(Base):
    """An immutable trained model: checkpoint, class map, hyperparameters and summary scores."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("num_classes >= 1", name="num_classes_positive"),
        ForeignKeyConstraint(["model_id", "parent_version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_model_versions_parent_version_model_versions"),
    )

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # 1, 2, ... per model
    parent_version: Mapped[int | None]
    # UNIQUE: a task produces at most one version, so a redelivered task cannot add a second.
    task_id: Mapped[str] = mapped_column(String(36), ForeignKey("tasks.id"), unique=True)
    architecture: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]]
    class_map: Mapped[dict[str, Any]]  # {"0": "background", "1": "cat", ...}: global index -> name
    num_classes: Mapped[int]
    checkpoint_key: Mapped[str] = mapped_column(String(512))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    checkpoint_bytes: Mapped[int] = mapped_column(BigInteger)
    miou_old: Mapped[float | None]
    miou_new: Mapped[float | None]
    miou_all: Mapped[float | None]
    # The promotion policy's decision when the version was recorded, with its reasons (a version's
    # record never changes: this says why it did or did not become production at that moment).
    promotion: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    metrics: Mapped[list[ClassMetric]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, order_by="ClassMetric.class_index"
    )


class ClassMetric(Base):
    """Per-class scores of one version; ``iou`` is NULL when the class is absent from the data."""

    __tablename__ = "class_metrics"
    __table_args__ = (
        ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_class_metrics_version_model_versions", ondelete="CASCADE"),
        ForeignKeyConstraint(["model_id", "class_index"], ["classes.model_id", "classes.id"],
                             name="fk_class_metrics_class_index_classes"),
    )

    model_id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    class_index: Mapped[int] = mapped_column(primary_key=True)
    iou: Mapped[float | None]
    tp: Mapped[int] = mapped_column(BigInteger)
    fp: Mapped[int] = mapped_column(BigInteger)
    fn: Mapped[int] = mapped_column(BigInteger)
    forgetting: Mapped[float | None]  # parent's IoU minus this version's, for classes both know

    model: Mapped[ModelVersion] = relationship(back_populates="metrics")


class VersionExport(Base):
    """A version exported for another runtime, cached in the object store: rebuilt whenever the row
    is missing, or was written under another export ``contract`` (the metadata and graph's layout).
    Deleted with its version (and its object after the commit: ``registry/versions.delete_version``)."""

    __tablename__ = "version_exports"
    __table_args__ = (
        CheckConstraint(_in("format", ExportFormat), name="format_valid"),
        ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_version_exports_version_model_versions", ondelete="CASCADE"),
    )

    model_id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    format: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(String(32))  # "strata-export/1": what the file's metadata follows
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alias(Base):
    """A movable name of a model ("production", "latest", "candidate", ...) pointing at one of its versions."""

    __tablename__ = "aliases"
    __table_args__ = (
        ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_aliases_version_model_versions"),
    )

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """An API key, stored as its sha256 only; ``prefix`` identifies it in listings."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(64))  # space-separated: "admin", "infer", "read"
    # False: the key works on the models listed in api_key_models only (none left: on no model).
    all_models: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    models: Mapped[list[Model]] = relationship(secondary=lambda: api_key_models, order_by="Model.name")


# The models a key limited to some models may use (api_keys.all_models false).
api_key_models = Table(
    "api_key_models",
    Base.metadata,
    Column("key_id", ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
    Column("model_id", ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
)


class WorkerHeartbeat(Base):
    """The last sign of life of a worker process, one row per host."""

    __tablename__ = "worker_heartbeats"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    pid: Mapped[int]
    queue: Mapped[str] = mapped_column(String(64))
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_ping_token: Mapped[str | None] = mapped_column(String(64))
    # Not a foreign key: a heartbeat must never stop a task from being deleted.
    current_task_id: Mapped[str | None] = mapped_column(String(36))


class AuditEvent(Base):
    """One admin action: who (an API key, or the service itself) did what to what, and when.

    History, written in the transaction of the action it describes and never changed. Nothing here
    is a foreign key: an event must outlive the model, version, task or key it names (a deleted
    model's history stays readable), so the key's and the model's names are copied in.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_model_id_at", "model_id", "at"),
        {"sqlite_autoincrement": True},  # an id is never reused: it is the paging cursor of GET /audit
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    # The key that acted; all three NULL for the service's own actions (an automatic promotion).
    key_id: Mapped[int | None]
    key_name: Mapped[str | None] = mapped_column(String(128))
    key_prefix: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))  # services/audit.py Action: "version.promote", ...
    model_id: Mapped[int | None]  # NULL for actions on no model (keys)
    model_name: Mapped[str | None] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128))  # "task 3f2a...", "version 3", "key 7"
    detail: Mapped[dict[str, Any]]  # e.g. {"from": 2, "to": 3} for a move of production


class StagedUpload(Base):
    """Dataset objects a registration stored before its rows exist (services/jobs/staging.py).

    Deleted with the task's rows when the registration commits, or once its objects are deleted
    when it failed; a row left over names objects that the janitor deletes."""

    __tablename__ = "staged_uploads"

    prefix: Mapped[str] = mapped_column(String(512), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))  # "host:pid" of the process storing them
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when its cleanup failed (the store was down): the janitor may take it at once.
    abandoned_at: Mapped[datetime | None]


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not sent yet, or to be tried again at next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed: given up


class Webhook(Base):
    """A subscription: events of some kinds (of some models, or all) are POSTed to ``url``, signed
    with ``secret`` (services/webhooks). Disabled by the service after ``consecutive_failures``
    failed attempts in a row, saying why in ``disabled_reason``."""

    __tablename__ = "webhooks"
    __table_args__ = (
        CheckConstraint("consecutive_failures >= 0", name="consecutive_failures_nonnegative"),
        {"sqlite_autoincrement": True},  # an id is never reused: a receiver's configuration names it
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]]  # event names (services/webhooks/events.py EVENTS), or ["*"]: all of them
    models: Mapped[list[Any] | None]  # model names; NULL: every model (and events of no model)
    # Kept as given: the deliverer signs with it (a hash would not do). Shown once, at creation.
    secret: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    # Failed attempts in a row, over all its deliveries; a success sets it back to 0.
    consecutive_failures: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_key_id: Mapped[int | None]  # not a foreign key, as in the audit log: keys come and go


class WebhookDelivery(Base):
    """One event for one subscription, and its attempts so far: the outbox of webhooks (written in
    the transaction of the change it announces) and the subscription's delivery log. Retries keep
    the row, so ``event_id`` (the receiver's deduplication key) stays the same."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DeliveryStatus), name="status_valid"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
        {"sqlite_autoincrement": True},  # an id is never reused: it pages the delivery log
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))  # "task.succeeded", ..., or "ping"
    event_id: Mapped[str] = mapped_column(String(32))  # uuid4 hex, shared by the event's deliveries
    payload: Mapped[dict[str, Any]]  # the body: {"id", "event", "created_at", "model", "data"}
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # When it is due (again); while a deliverer holds it, the end of its lease. NULL once it ended.
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
