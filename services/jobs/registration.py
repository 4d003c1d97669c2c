"""Registering a training task of a model with its data, all or nothing (``POST /models/{name}/tasks``).

Order: replay check (``Idempotency-Key``), spec, class names against the model's classes, the upload
read in its format (services/data/formats/), every file validated (images decoded, masks converted to
local index form, the import's report written) -- and only then the bytes are
stored under ``models/{model_id}/datasets/{task_id}/`` and ONE transaction writes the task, its
classes and its dataset items. If anything fails after the first byte was stored, the task's prefix is deleted
and the transaction rolled back: a rejected request leaves no rows and no objects behind (if the store
died mid-upload, its objects are deleted once it is back: ``staging``).

Queue-free: the caller sends the task to the workers after ``register_task`` returns a created one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from services import audit
from services.auth import Caller
from services.config import Settings
from services.data.archive import ArchiveLimits
from services.data.formats import Dataset, read_upload
from services.data.multipart import Received
from services.data.upload import CONTENT_TYPES, PreparedItem, UploadRejected, listed, prepare_items, unlabelled_classes
from services.db.models import (
    PENDING_STATUSES,
    DatasetItem,
    Model,
    ModelVersion,
    SemanticClass,
    Split,
    Task,
    new_task_id,
)
from services.db.session import session_scope
from services.jobs import lifecycle, staging
from services.jobs.errors import IdempotencyMismatch, RegistrationConflict
from services.jobs.spec import ResolvedSpec, TaskDefaults, TaskSpec, parse_spec
from services.jobs.timings import INGEST
from services.labels import BACKGROUND_INDEX, BACKGROUND_NAME, MAX_CLASS_INDEX
from services.learning.names import BATCH_OF_TWO, DEFAULT_METHOD
from services.registry.aliases import production_version
from services.registry.models import model_by_id, version_count
from services.storage import InvalidKey, ObjectInfo, ObjectStore
from services.storage.keys import dataset_image_key, dataset_mask_key, dataset_prefix

log = logging.getLogger(__name__)

UPLOAD_THREADS = 8  # object-store writes in flight at once (I/O bound)
# Serialises registrations on Postgres (SQLite's BEGIN IMMEDIATE already does): two requests
# must not pick the same class indices or both queue behind the same task.
REGISTRATION_LOCK_KEY = 0x5354524154410002


class _Replayed(Exception):
    """Raised inside the transaction when the same Idempotency-Key committed meanwhile."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id


@dataclass(frozen=True)
class IngestLimits:
    max_pixels: int
    archive: ArchiveLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        return cls(settings.max_image_pixels,
                   ArchiveLimits(max_bytes=4 * settings.max_upload_bytes, max_ratio=settings.max_archive_ratio))


@dataclass(frozen=True)
class Registration:
    task_id: str
    created: bool  # False: an earlier request with the same Idempotency-Key made it


@dataclass(frozen=True)
class _Plan:
    """What the database says about a new task: its model, its resolved spec (class indices not
    assigned yet) and where it sits in the model's lineage."""

    model: Model
    spec: ResolvedSpec
    parent_version: int | None


@dataclass(frozen=True)
class _Stored:
    item: PreparedItem
    image_key: str
    image: ObjectInfo
    mask_key: str
    mask: ObjectInfo


# --- the whole registration ------------------------------------------------------------------
def register_task(sessions: sessionmaker[Session], store: ObjectStore, model_id: int, received: Received,
                  workdir: Path, limits: IngestLimits, *, idempotency_key: str | None = None,
                  actor: Caller | None = None, defaults: TaskDefaults = TaskDefaults()) -> Registration:
    """Validate ``received`` (a ``spec`` text and files ``images`` + ``masks`` or one ``archive``),
    store it and record a queued task of the model ``model_id``, with its audit event naming
    ``actor`` (None: the service). Raises UploadRejected naming what is wrong (file, field),
    ModelNotFound, or RegistrationConflict when the model's state forbids it. ``defaults``: what a
    model's first task gets for the fields its spec leaves out (the service's settings)."""
    began = time.perf_counter()
    if idempotency_key is not None:
        with session_scope(sessions) as session:
            earlier = replay(session, model_by_id(session, model_id), idempotency_key, received.sha256)
        if earlier is not None:
            return Registration(earlier.id, created=False)
    spec = parse_spec(received.texts.get("spec"))
    with session_scope(sessions) as session:
        architecture = plan(session, model_id, spec, defaults).spec.architecture  # fail fast on names and architecture
    dataset = read_upload(received, spec.format, spec.import_options(), workdir, limits.archive)
    items = prepare_items(dataset.samples, limits.max_pixels, workdir / "masks")
    dataset.finish(items)
    _check_training_images(len(items), spec.val_fraction, architecture)
    if absent := unlabelled_classes(items, spec.local_names, spec.classes):
        # Each class takes one of the model's 254 indices for good once trained: none for a class nothing shows.
        raise UploadRejected(f"invalid spec: classes: no mask labels {listed(absent)}; a task's new classes "
                             "must each appear in at least one mask (remove them from `classes`)")
    task_id = new_task_id()
    keys = [_keys(model_id, task_id, item) for item in items]
    prefix = dataset_prefix(model_id, task_id)
    staging.stage(sessions, prefix)  # before the first byte: what fails below is deleted, now or later
    try:
        stored = _store_all(store, items, keys)
        with session_scope(sessions) as session:
            task = _record(session, model_id, task_id, spec, stored, dataset, idempotency_key, received.sha256,
                           actor, defaults)
            task.timings = {INGEST: round(time.perf_counter() - began, 3)}
            if not staging.unstage(session, prefix):  # swept as debris meanwhile: its objects may be gone
                raise RegistrationConflict("the upload took too long to be recorded and was cleaned up; "
                                           "send it again")
        return Registration(task_id, created=True)
    except _Replayed as race:  # a concurrent request with the same key committed first
        staging.discard(sessions, store, prefix)
        return Registration(race.task_id, created=False)
    except BaseException:
        staging.discard(sessions, store, prefix)
        raise


def replay(session: Session, model: Model, key: str, request_sha256: str) -> Task | None:
    """The task an earlier request to this model with this Idempotency-Key created (same body), or
    None. Keys are the client's, per model: another model's tasks are never looked at."""
    stmt = select(Task).where(Task.model_id == model.id, Task.idempotency_key == key)
    task = session.scalars(stmt).one_or_none()
    if task is not None and task.request_sha256 != request_sha256:
        raise IdempotencyMismatch(
            f"Idempotency-Key {key!r} was already used for a different request (task {task.id}); "
            "use a new key for a new request")
    return task


# --- files ------------------------------------------------------------------------------------
def _keys(model_id: int, task_id: str, item: PreparedItem) -> tuple[str, str]:
    try:
        return (dataset_image_key(model_id, task_id, item.stem, item.image_ext),
                dataset_mask_key(model_id, task_id, item.stem))
    except InvalidKey as err:
        raise UploadRejected(f"file {item.image.name!r} cannot be stored under its name: {err}") from None


def _store_all(store: ObjectStore, items: Sequence[PreparedItem], keys: Sequence[tuple[str, str]]) -> list[_Stored]:
    """Upload every image (original bytes) and local mask; all writes have stopped when this returns."""
    pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="ingest-upload")
    try:
        futures = [pool.submit(_store_one, store, item, *k) for item, k in zip(items, keys)]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _store_one(store: ObjectStore, item: PreparedItem, image_key: str, mask_key: str) -> _Stored:
    image = store.put_file(image_key, item.image.path, CONTENT_TYPES[item.image_ext])
    mask = store.put_file(mask_key, item.mask_path, "image/png")
    return _Stored(item, image_key, image, mask_key, mask)


def validation_stems(stems: Sequence[str], task_id: str, fraction: float) -> set[str]:
    """The stems kept for validation: ``round(n * fraction)``, at least one when fraction > 0 and
    there are 2+ images, never all. Ranked by a hash of (task id, stem): deterministic, and a
    stem's fate does not depend on the other stems."""
    n = len(stems)
    n_val = round(n * fraction)
    if fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1) if n else 0
    ranked = sorted(stems, key=lambda s: hashlib.sha256(f"{task_id}/{s}".encode()).hexdigest())
    return set(ranked[:n_val])


# --- the database -------------------------------------------------------------------------------
def plan(session: Session, model_id: int, spec: TaskSpec, defaults: TaskDefaults = TaskDefaults()) -> _Plan:
    """Check the spec against the model's state and resolve its defaults (no writes)."""
    model = model_by_id(session, model_id)
    _check_names(session, model, spec)
    pending = latest_pending(session, model.id)
    production = production_version(session, model.id)
    if pending is None and production is None and version_count(session, model.id):
        # Versions exist but none is production (e.g. auto-promotion off): starting a new base
        # model here would silently drop every class learnt so far.
        raise RegistrationConflict(
            f"model {model.name!r} has no version in production, so there is nothing to add classes to: "
            f"promote one first (PUT /models/{model.name}/aliases/production)")
    architecture = _resolve_architecture(session, model, spec.architecture, pending, production, defaults)
    _check_first_step(model, spec, first=pending is None and production is None)
    method = spec.method or DEFAULT_METHOD
    _check_weights(method, spec.hyperparameters.loss_weights())
    image_size = spec.image_size or _lineage_image_size(session, model.id, pending, production) or defaults.image_size
    resolved = ResolvedSpec.model_validate({**spec.model_dump(), "method": method, "architecture": architecture,
                                            "image_size": image_size, "after_task_id": pending.id if pending else None})
    return _Plan(model, resolved, parent_version=None if pending else production)


def latest_pending(session: Session, model_id: int) -> Task | None:
    """The model's newest queued or running training task: a new task of the model queues behind it."""
    stmt = select(Task).where(Task.model_id == model_id, Task.kind == "train", Task.status.in_(PENDING_STATUSES))
    return session.scalars(stmt.order_by(Task.created_at.desc(), Task.id.desc()).limit(1)).first()


def _check_weights(method: str, weights: dict[str, Any]) -> None:
    from services.learning.methods import build_method

    try:
        build_method(method, 1, **weights)  # the engine's own check: a weight the method does not use
    except ValueError as err:
        raise UploadRejected(f"invalid spec: hyperparameters: {err}") from None


def _check_first_step(model: Model, spec: TaskSpec, *, first: bool) -> None:
    """Settings that build the network (``Hyperparameters.FIRST_STEP_FIELDS``) belong to the model's
    first task, like its architecture: a later task grows the network it inherits, so they would be
    ignored without a word. ``pretrained_backbone: false`` is accepted anywhere: loading no
    pretrained weights is what every later step does."""
    values = spec.hyperparameters.given()
    given = [f for f in spec.hyperparameters.FIRST_STEP_FIELDS
             if f in values and not (f == "pretrained_backbone" and values[f] is False)]
    if given and not first:
        fields = ", ".join(f"hyperparameters.{f}" for f in given)
        raise UploadRejected(
            f"invalid spec: {fields}: only a model's first task builds the network; model {model.name!r} has "
            "one already (or a queued task builds it) and later tasks inherit it (leave it out)")


def _check_names(session: Session, model: Model, spec: TaskSpec) -> None:
    wanted = [*spec.classes, *spec.also_labelled]
    existing = set(session.scalars(select(SemanticClass.name).where(
        SemanticClass.model_id == model.id, SemanticClass.name.in_(wanted))))
    taken = [c for c in spec.classes if c in existing]
    if taken:
        raise RegistrationConflict(
            f"model {model.name!r} already has classes {listed(taken)}; a task adds new classes only "
            "(list existing classes your masks label under also_labelled)")
    unknown = [c for c in spec.also_labelled if c not in existing]
    if unknown:
        raise UploadRejected(f"also_labelled names classes that model {model.name!r} does not have: {listed(unknown)}")


def _resolve_architecture(session: Session, model: Model, asked: str | None, pending: Task | None,
                          production: int | None, defaults: TaskDefaults) -> str:
    """The architecture: free for the model's first task, inherited by every later one."""
    current = _lineage_architecture(session, model.id, pending, production)
    if current is None:
        return asked or defaults.architecture
    if asked is not None and asked != current:
        raise UploadRejected(
            f"invalid spec: architecture: only a model's first task chooses it; model {model.name!r} is a "
            f"{current!r} and later tasks inherit it (leave `architecture` out, or create another model)")
    return current


def _lineage_architecture(session: Session, model_id: int, pending: Task | None, production: int | None) -> str | None:
    if pending is not None:
        return ResolvedSpec.of(pending).architecture
    if production is not None:
        return session.get(ModelVersion, (model_id, production)).architecture
    stmt = select(ModelVersion.architecture).where(ModelVersion.model_id == model_id)
    return session.scalars(stmt.order_by(ModelVersion.version.desc())).first()


def _lineage_image_size(session: Session, model_id: int, pending: Task | None, production: int | None) -> int | None:
    """The image size of the version a new task grows from (the pending task's, or production's): a
    step distils its parent at the resolution the parent was trained at, unless the spec says otherwise."""
    if pending is not None:
        return ResolvedSpec.of(pending).image_size
    if production is not None:
        return (session.get(ModelVersion, (model_id, production)).hyperparameters or {}).get("image_size")
    return None


def _check_training_images(n_images: int, val_fraction: float, architecture: str) -> None:
    """An architecture whose head normalises a pooled 1x1 map (``BATCH_OF_TWO``) cannot train on a
    batch of one image: an upload that leaves it one training image, once validation took its
    share, would fail on the worker, so it is refused here."""
    n_val = len(validation_stems([str(i) for i in range(n_images)], "", val_fraction))
    if architecture in BATCH_OF_TWO and n_images - n_val < 2:
        kept = f" once val_fraction {val_fraction:g} kept {n_val} for validation" if n_val else ""
        raise UploadRejected(
            f"invalid spec: val_fraction: the upload leaves {n_images - n_val} training image{kept}; a "
            f"{architecture} trains on batches of at least 2 images (send more images, or set val_fraction 0)")


def _lock_registrations(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REGISTRATION_LOCK_KEY})


def next_class_indices(session: Session, model_id: int, count: int) -> list[int]:
    """``count`` fresh indices of the model, above every index in use: a class's, and any assigned
    to a task that is pending or produced a version. A failed or cancelled task that never
    produced a version gives its indices back (no version ever used them), so a cancelled task
    that declared every remaining class does not exhaust the model. Indices below the highest one
    in use are not reused, so the limit is MAX_CLASS_INDEX (254) classes per model, counting such gaps."""
    used = session.scalar(select(func.max(SemanticClass.id)).where(SemanticClass.model_id == model_id)) or 0
    holding = select(Task).where(Task.model_id == model_id,
                                 or_(Task.status.in_(PENDING_STATUSES), Task.model_version.is_not(None)))
    for task in session.scalars(holding):
        used = max([used, *ResolvedSpec.of(task).assigned_classes.values()])
    if used + count > MAX_CLASS_INDEX:
        raise RegistrationConflict(
            f"no class indices left: {count} new classes would need indices up to {used + count}, "
            f"the last usable one is {MAX_CLASS_INDEX}")
    return list(range(used + 1, used + 1 + count))


def _record(session: Session, model_id: int, task_id: str, spec: TaskSpec, stored: Sequence[_Stored],
            dataset: Dataset, idempotency_key: str | None, request_sha256: str, actor: Caller | None = None,
            defaults: TaskDefaults = TaskDefaults()) -> Task:
    """The task, its classes, its items and its audit event, in the caller's transaction."""
    _lock_registrations(session)
    model = model_by_id(session, model_id, for_update=True)  # a deletion of the model waits, or went first
    if idempotency_key is not None:
        earlier = replay(session, model, idempotency_key, request_sha256)
        if earlier is not None:
            raise _Replayed(earlier.id)
    planned = plan(session, model_id, spec, defaults)  # again, under the lock: the state may have moved meanwhile
    model = planned.model
    assigned = dict(zip(spec.classes, next_class_indices(session, model.id, len(spec.classes))))
    resolved = planned.spec.model_copy(update={"assigned_classes": assigned})
    task = lifecycle.queue(session, model.id, task_id, resolved, planned.parent_version,
                           idempotency_key=idempotency_key, request_sha256=request_sha256)
    task.import_report = dataset.report.as_json()
    model.architecture = resolved.architecture
    session.flush()  # classes and items reference the task
    if session.get(SemanticClass, (model.id, BACKGROUND_INDEX)) is None:
        session.add(SemanticClass(model_id=model.id, id=BACKGROUND_INDEX, name=BACKGROUND_NAME, task_id=None))
    session.add_all(SemanticClass(model_id=model.id, id=index, name=name, task_id=task_id)
                    for name, index in assigned.items())
    val = validation_stems([s.item.stem for s in stored], task_id, spec.val_fraction)
    session.add_all(_item_row(task_id, s, Split.VAL if s.item.stem in val else Split.TRAIN) for s in stored)
    audit.record(session, actor, audit.Action.TASK_CREATE, model=model, target=f"task {task_id}",
                 detail={"classes": list(spec.classes), "method": resolved.method, "items": len(stored),
                         "format": dataset.format})
    session.flush()
    return task


def _item_row(task_id: str, s: _Stored, split: Split) -> DatasetItem:
    return DatasetItem(
        task_id=task_id, stem=s.item.stem, split=split.value,
        image_key=s.image_key, image_sha256=s.image.sha256, image_bytes=s.image.size,
        mask_key=s.mask_key, mask_sha256=s.mask.sha256, mask_bytes=s.mask.size,
        width=s.item.width, height=s.item.height)
