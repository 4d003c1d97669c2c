"""``strata verify``: does the object store hold what the database says, and nothing else?

An operator runs it after restoring a backup (docs/operations.md): the database and the bucket are
copied separately, so either may lack what the other names. Three kinds of trouble:

- a row that names an object the store does not have, or has with another size or sha256
  (every checkpoint is read and hashed; dataset images and masks and version exports are compared
  by size, and hashed too with ``deep``);
- an object no row names (an orphan): left behind, or written after the database's dump;
- nothing else: the training state of a queued or running task (``training/{task}/last.pt``) and
  the objects under a staged upload's prefix (in flight, or failed and awaiting the API's sweep:
  ``services/jobs/staging.py``) are expected without a row naming them, and objects younger than
  ``grace_s`` are not judged (a checkpoint is stored before the transaction that names it commits).

The store is listed before the rows are read, so an object stored and named meanwhile is looked up
on its own instead of being reported missing. Objects are streamed, never read whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from services.db.models import PENDING_STATUSES, DatasetItem, Model, ModelVersion, StagedUpload, Task, VersionExport
from services.storage import ObjectInfo, ObjectNotFound, ObjectStore
from services.storage.keys import key_owner, training_state_key
from services.storage.streams import CHUNK_SIZE, HashingReader

MISSING, SIZE_MISMATCH, SHA256_MISMATCH, ORPHAN = "missing", "size mismatch", "sha256 mismatch", "orphan"


@dataclass(frozen=True)
class Problem:
    """One thing wrong: its kind, the object's key, who it belongs to (where known) and why."""

    kind: str
    key: str
    detail: str
    model: str | None = None
    version: int | None = None
    task_id: str | None = None


@dataclass
class Report:
    """What was checked and what was found; ``ok`` when nothing was."""

    deep: bool
    checkpoints: int = 0  # versions whose checkpoint was read and hashed
    dataset_objects: int = 0  # images and masks checked (by size, or hashed too when deep)
    exports: int = 0  # version exports checked (by size, or hashed too when deep)
    objects: int = 0  # objects in the store
    training_states: int = 0  # objects of queued or running tasks: expected, no row names them
    staged: int = 0  # objects of uploads in flight or awaiting their cleanup: expected too
    recent: int = 0  # unnamed objects younger than the grace period: not judged
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class _Expected:
    """An object a row names, with what the row says about it."""

    key: str
    size: int
    sha256: str
    what: str  # "checkpoint of version 3", "mask of item 'img01'", "onnx export of version 3"
    hash: bool
    model: str
    version: int | None = None
    task_id: str | None = None


def verify(sessions: sessionmaker[Session], store: ObjectStore, *, deep: bool = False, grace_s: float = 600,
           progress: bool = False) -> Report:
    """Check every object the database names against the store, and the store for objects it does
    not name. ``progress``: a tqdm bar on stderr while objects are checked."""
    report = Report(deep=deep)
    listed = {info.key: info for info in store.list()}  # before the rows: see the module's docstring
    report.objects = len(listed)
    with sessions() as session:
        names = dict(session.execute(select(Model.id, Model.name)).all())
        checkpoints, dataset = list(_checkpoints(session, names)), list(_dataset_objects(session, names, deep))
        exports = list(_exports(session, names, deep))
        pending = {training_state_key(m, t) for t, m in session.execute(
            select(Task.id, Task.model_id).where(Task.status.in_(PENDING_STATUSES)))}
        staged = tuple(session.scalars(select(StagedUpload.prefix)))
    report.checkpoints, report.dataset_objects, report.exports = len(checkpoints), len(dataset), len(exports)
    for item in tqdm([*checkpoints, *dataset, *exports], desc="verify", unit="object", disable=not progress):
        problem = _check(store, item, listed.get(item.key))
        if problem is not None:
            report.problems.append(problem)
    named = {e.key for e in (*checkpoints, *dataset, *exports)}
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace_s)
    for key, info in listed.items():
        if key in named:
            continue
        if key in pending:
            report.training_states += 1
        elif key.startswith(staged):
            report.staged += 1
        elif info.last_modified is not None and info.last_modified > cutoff:
            report.recent += 1
        else:
            report.problems.append(_orphan(key, names))
    return report


def _checkpoints(session: Session, names: dict[int, str]) -> Iterator[_Expected]:
    rows = session.execute(select(ModelVersion.model_id, ModelVersion.version, ModelVersion.task_id,
                                  ModelVersion.checkpoint_key, ModelVersion.checkpoint_bytes,
                                  ModelVersion.checkpoint_sha256).order_by(ModelVersion.model_id, ModelVersion.version))
    for model_id, version, task_id, key, size, sha256 in rows:
        yield _Expected(key, size, sha256, f"checkpoint of version {version}", True, names[model_id], version, task_id)


def _dataset_objects(session: Session, names: dict[int, str], deep: bool) -> Iterator[_Expected]:
    rows = session.execute(select(DatasetItem, Task.model_id).join(Task, Task.id == DatasetItem.task_id)
                           .order_by(Task.model_id, DatasetItem.id))
    for item, model_id in rows:
        model = names[model_id]
        yield _Expected(item.image_key, item.image_bytes, item.image_sha256, f"image of item {item.stem!r}", deep,
                        model, task_id=item.task_id)
        yield _Expected(item.mask_key, item.mask_bytes, item.mask_sha256, f"mask of item {item.stem!r}", deep,
                        model, task_id=item.task_id)


def _exports(session: Session, names: dict[int, str], deep: bool) -> Iterator[_Expected]:
    rows = session.execute(select(VersionExport).order_by(VersionExport.model_id, VersionExport.version,
                                                          VersionExport.format))
    for (row,) in rows:
        yield _Expected(row.key, row.bytes, row.sha256, f"{row.format} export of version {row.version}", deep,
                        names[row.model_id], row.version)


def _check(store: ObjectStore, item: _Expected, info: ObjectInfo | None) -> Problem | None:
    def problem(kind: str, detail: str) -> Problem:
        return Problem(kind, item.key, f"{item.what}: {detail}", item.model, item.version, item.task_id)

    try:
        info = info or store.stat(item.key)  # not listed: perhaps stored after the listing
        if info.size != item.size:
            return problem(SIZE_MISMATCH, f"the store holds {info.size} bytes, the database says {item.size}")
        if item.hash:
            digest = _read_sha256(store, item.key)
            if digest != item.sha256:
                return problem(SHA256_MISMATCH, f"the bytes hash to {digest}, the database says {item.sha256}")
    except ObjectNotFound:
        return problem(MISSING, "the database names it, the store does not have it")
    return None


def _read_sha256(store: ObjectStore, key: str) -> str:
    """The sha256 of the bytes themselves, read in chunks (not a digest the store recorded: that
    would not notice bytes changed under it)."""
    with store.open(key) as src:
        reader = HashingReader(src, key)
        while reader.read(CHUNK_SIZE):
            pass
    return reader.hexdigest()


def _orphan(key: str, names: dict[int, str]) -> Problem:
    owner = key_owner(key)
    model = None if owner.model_id is None else names.get(owner.model_id, f"#{owner.model_id} (deleted)")
    whose = {"checkpoint": f"a checkpoint of version {owner.version}",
             "export": f"an export of version {owner.version}",
             "dataset": f"a dataset object of task {owner.task_id}",
             "training state": f"the training state of task {owner.task_id}, which is not queued or running"}
    detail = whose.get(owner.kind or "", "an object Strata did not write")
    return Problem(ORPHAN, key, f"{detail}; no row names it", model, owner.version, owner.task_id)

