"""Registering a task: spec validation, all-or-nothing storage, class indices, lineage, views, cancel."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from services.data.multipart import Received
from services.data.upload import ReceivedFile, UploadRejected
from services.db.models import Alias, DatasetItem, ModelVersion, SemanticClass, Task, TaskStatus
from services.db.session import make_engine, make_session_factory, session_scope
from services.jobs.errors import IdempotencyMismatch, RegistrationConflict, TaskFinished
from services.jobs.lifecycle import request_cancel as cancel_task
from services.jobs.registration import IngestLimits, register_task, validation_stems
from services.jobs.spec import parse_spec
from services.jobs.views import list_task_views, progress_view, task_view
from services.storage import open_store


# --- helpers ------------------------------------------------------------------------------------
def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def index_mask(seed: int, n_classes: int, h: int = 12, w: int = 16) -> np.ndarray:
    values = np.zeros((h, w), np.uint8)
    for k in range(1, n_classes + 1):
        values[(seed + 2 * k) % h] = k
    values[0, 0] = 255
    return values


class Upload:
    """Builds a Received (what the multipart reader hands over) from in-memory files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, list[ReceivedFile]] = {}
        self.count = 0

    def add(self, field: str, name: str, data: bytes) -> Upload:
        self.count += 1
        path = self.root / f"part-{self.count}"
        path.write_bytes(data)
        self.files.setdefault(field, []).append(
            ReceivedFile(name, path, len(data), hashlib.sha256(data).hexdigest()))
        return self

    def dataset(self, n: int, n_classes: int) -> Upload:
        rng = np.random.default_rng(n)
        for i in range(n):
            self.add("images", f"img{i:02d}.jpg", encode(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "JPEG"))
            self.add("masks", f"img{i:02d}.png", encode(index_mask(i, n_classes)))
        return self

    def received(self, spec: dict) -> Received:
        text = json.dumps(spec)
        digest = hashlib.sha256((text + repr([(f.name, f.sha256) for fs in self.files.values() for f in fs]))
                                .encode()).hexdigest()
        return Received(texts={"spec": text}, files=self.files, sha256=digest)


@pytest.fixture
def env(prepared):
    sessions = make_session_factory(make_engine(prepared))
    return prepared, sessions, open_store(prepared)


def register(env, tmp_path, spec, n=5, n_classes=None, key=None, store=None):
    settings, sessions, real_store = env
    n_classes = len(spec["classes"]) + len(spec.get("also_labelled", [])) if n_classes is None else n_classes
    up = Upload(tmp_path / f"up-{np.random.default_rng().integers(1 << 30)}").dataset(n, n_classes)
    work = up.root / "work"
    return register_task(sessions, store or real_store, up.received(spec), work,
                         IngestLimits.from_settings(settings), idempotency_key=key)


def leftovers(env) -> tuple[int, int, int, int]:
    _, sessions, store = env
    with sessions() as s:
        counts = tuple(s.scalar(select(func.count()).select_from(t)) for t in (Task, DatasetItem, SemanticClass))
    return (*counts, len(list(store.list("datasets/"))))


# --- the spec -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, message", [
    ({}, "classes: Field required"),
    ({"classes": []}, "classes: List should have at least 1 item"),
    ({"classes": ["cat", " cat "]}, "classes: classes repeats cat"),
    ({"classes": ["Background"]}, "'Background' is reserved"),
    ({"classes": [""]}, "must be 1 to 128 characters"),
    ({"classes": ["a"], "hyperparameters": {"lr": 0.1, "lerning_rate": 1}}, "hyperparameters.lerning_rate: unknown key"),
    ({"classes": ["a"], "hyperparameters": {"momentum": 1.5}}, "hyperparameters.momentum: Input should be less than 1"),
    ({"classes": ["a"], "epochs": 0}, "epochs: Input should be greater than or equal to 1"),
    ({"classes": ["a"], "val_fraction": 0.95}, "val_fraction: Input should be less than 0.9"),
    ({"classes": ["a"], "method": "magic"}, "unknown method 'magic'"),
    ({"classes": ["a"], "method": "joint"}, "joint needs every earlier step's images"),
    ({"classes": ["a"], "model": "resnet9000"}, "unknown model 'resnet9000'"),
    ({"classes": ["a"], "colour": "red"}, "colour: unknown key"),
    ({"classes": ["a"], "mask_format": "palette"}, "needs a palette"),
    ({"classes": ["a", "b"], "mask_format": "palette", "palette": {"a": [1, 2, 3]}}, "palette has no colour for b"),
    ({"classes": ["a"], "mask_format": "palette", "palette": {"a": [1, 2, 3], "z": [3, 2, 1]}}, "palette names z"),
    ({"classes": ["a"], "mask_format": "palette", "palette": {"a": [0, 0, 0]}}, "black, which is reserved"),
    ({"classes": ["a"], "mask_format": "palette", "palette": {"a": [1, 2, 300]}}, "three values 0..255"),
    ({"classes": ["a", "b"], "mask_format": "palette", "palette": {"a": [1, 2, 3], "b": [1, 2, 3]}},
     "used by more than one class"),
    ({"classes": ["a"], "palette": {"a": [1, 2, 3]}}, "only used with mask_format 'palette'"),
    ({"classes": ["a"], "also_labelled": ["a"]}, "cannot be both new"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(UploadRejected) as err:
        parse_spec(json.dumps(spec))
    assert message in str(err.value)


def test_spec_defaults_and_cleaning():
    spec = parse_spec('{"classes": [" cat ", "dog"], "hyperparameters": {"lr": 0.02}}')
    assert spec.classes == ["cat", "dog"] and spec.epochs == 30 and spec.image_size == 512
    assert spec.batch_size == 8 and spec.val_fraction == 0.1 and spec.mask_format == "index"
    assert spec.hyperparameters.lr == 0.02 and spec.hyperparameters.momentum is None
    with pytest.raises(UploadRejected, match="not valid JSON"):
        parse_spec("{classes: [")
    with pytest.raises(UploadRejected, match="`spec` is missing"):
        parse_spec(None)


def test_validation_split_is_deterministic_and_never_empty():
    stems = [f"s{i}" for i in range(20)]
    val = validation_stems(stems, "task-a", 0.1)
    assert len(val) == 2 and val == validation_stems(list(reversed(stems)), "task-a", 0.1)
    assert val != validation_stems(stems, "task-b", 0.1) or val != validation_stems(stems, "task-c", 0.1)
    assert len(validation_stems(stems[:3], "t", 0.1)) == 1  # at least one when fraction > 0
    assert validation_stems(stems[:1], "t", 0.5) == set()  # never all of them
    assert validation_stems(stems, "t", 0.0) == set()
    assert val <= validation_stems(stems + ["extra"], "task-a", 0.2)  # a stem's rank is its own


# --- registration ----------------------------------------------------------------------------------
def test_a_first_task_is_stored_and_recorded_in_one_piece(env, tmp_path):
    _, sessions, store = env
    reg = register(env, tmp_path, {"classes": ["cat", "dog"], "epochs": 3}, n=6)
    assert reg.created
    with sessions() as s:
        task = s.get(Task, reg.task_id)
        assert task.status == "queued" and task.parent_version is None
        assert task.spec["assigned_classes"] == {"cat": 1, "dog": 2}
        assert task.spec["method"] == "mib" and task.spec["model"] == "deeplabv3_resnet101"
        assert task.spec["after_task_id"] is None and task.spec["epochs"] == 3
        classes = {c.id: (c.name, c.task_id) for c in s.scalars(select(SemanticClass))}
        assert classes == {0: ("background", None), 1: ("cat", task.id), 2: ("dog", task.id)}
        items = list(s.scalars(select(DatasetItem).where(DatasetItem.task_id == task.id)))
    assert len(items) == 6 and sorted(i.split for i in items).count("val") == 1
    keys = {i.key for i in store.list(f"datasets/{reg.task_id}/")}
    for item in items:
        assert item.image_key == f"datasets/{reg.task_id}/images/{item.stem}.jpg" and item.image_key in keys
        assert item.mask_key == f"datasets/{reg.task_id}/masks/{item.stem}.png" and item.mask_key in keys
        assert store.stat(item.image_key).size == item.image_bytes and (item.width, item.height) == (16, 12)
        with store.open(item.mask_key) as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == item.mask_sha256
        seed = int(item.stem.removeprefix("img"))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), index_mask(seed, 2))
    assert len(keys) == 12


def test_a_later_task_queues_behind_the_pending_one_and_inherits_the_model(env, tmp_path):
    _, sessions, _ = env
    first = register(env, tmp_path, {"classes": ["cat", "dog"], "model": "lraspp_mobilenet_v3_large"})
    second = register(env, tmp_path, {"classes": ["bird"], "also_labelled": ["cat"]})
    with sessions() as s:
        task = s.get(Task, second.task_id)
        assert task.spec["after_task_id"] == first.task_id and task.parent_version is None
        assert task.spec["assigned_classes"] == {"bird": 3}
        assert task.spec["model"] == "lraspp_mobilenet_v3_large"
    with pytest.raises(UploadRejected, match="only the first task chooses the model"):
        register(env, tmp_path, {"classes": ["cow"], "model": "fcn_resnet50"})
    with pytest.raises(UploadRejected, match="also_labelled names classes that do not exist: unicorn"):
        register(env, tmp_path, {"classes": ["cow"], "also_labelled": ["unicorn"]})
    with pytest.raises(RegistrationConflict, match="classes already exist: dog"):
        register(env, tmp_path, {"classes": ["cow", "dog"]})
    assert leftovers(env)[:2] == (2, 10)


def test_with_nothing_pending_a_task_starts_from_production(env, tmp_path):
    _, sessions, _ = env
    first = register(env, tmp_path, {"classes": ["cat"], "model": "fcn_resnet50"})
    with session_scope(sessions) as s:  # what the worker and the registry record for a trained task
        s.add(ModelVersion(version=1, task_id=first.task_id, architecture="fcn_resnet50", method="ft",
                           hyperparameters={}, class_map={"0": "background", "1": "cat"}, num_classes=2,
                           checkpoint_key="checkpoints/1/model.pt", checkpoint_sha256="0" * 64, checkpoint_bytes=1))
        s.flush()
        task = s.get(Task, first.task_id)
        task.status, task.model_version = TaskStatus.SUCCEEDED.value, 1
    # A version but no production alias: adding classes would silently start a new base model.
    with pytest.raises(RegistrationConflict, match="no version is in production"):
        register(env, tmp_path, {"classes": ["dog"]})
    with session_scope(sessions) as s:
        s.add(Alias(name="production", version=1))
    second = register(env, tmp_path, {"classes": ["dog"]})
    with sessions() as s:
        task = s.get(Task, second.task_id)
        assert task.parent_version == 1 and task.spec["after_task_id"] is None
        assert task.spec["model"] == "fcn_resnet50"


def test_indices_of_cancelled_tasks_are_never_reused_but_their_names_are(env, tmp_path):
    _, sessions, _ = env
    first = register(env, tmp_path, {"classes": ["cat", "dog"]})
    with session_scope(sessions) as s:
        assert cancel_task(s, first.task_id) is True
    with sessions() as s:
        assert s.get(Task, first.task_id).status == "cancelled"
        assert [c.name for c in s.scalars(select(SemanticClass))] == ["background"]
    again = register(env, tmp_path, {"classes": ["dog"]})
    with sessions() as s:
        assert s.get(Task, again.task_id).spec["assigned_classes"] == {"dog": 3}
        assert s.get(Task, again.task_id).spec["after_task_id"] is None  # the cancelled one is not pending


def test_bad_files_are_rejected_before_anything_is_stored(env, tmp_path):
    register(env, tmp_path, {"classes": ["cat"]})
    before = leftovers(env)
    with pytest.raises(UploadRejected, match=r"has values 2 outside the declared classes"):
        register(env, tmp_path, {"classes": ["dog"]}, n_classes=2)
    assert leftovers(env) == before


class RacingStore:
    """The real store; while our files upload, another request registers the class 'dog' (the
    real sequence of a concurrent registration, made deterministic)."""

    def __init__(self, store, sessions) -> None:
        self.store, self.sessions, self.raced = store, sessions, False

    def __getattr__(self, name):
        return getattr(self.store, name)

    def put_file(self, key, path, content_type="application/octet-stream"):
        if not self.raced:
            self.raced = True
            with session_scope(self.sessions) as s:
                s.add(SemanticClass(id=50, name="dog", task_id=None))
        return self.store.put_file(key, path, content_type)


def test_a_failure_after_storing_deletes_the_objects_and_writes_no_rows(env, tmp_path):
    _, sessions, store = env
    racing = RacingStore(store, sessions)
    with pytest.raises(RegistrationConflict, match="classes already exist: dog"):
        register(env, tmp_path, {"classes": ["dog"]}, n=6, store=racing)
    assert racing.raced
    assert leftovers(env) == (0, 0, 1, 0)  # only the racing request's class row


def test_idempotency_key_replays_the_same_request_and_refuses_another(env, tmp_path):
    settings, sessions, store = env
    up = Upload(tmp_path / "up").dataset(3, 1)
    received = up.received({"classes": ["cat"]})
    limits = IngestLimits.from_settings(settings)
    first = register_task(sessions, store, received, tmp_path / "w1", limits, idempotency_key="k-1")
    again = register_task(sessions, store, received, tmp_path / "w2", limits, idempotency_key="k-1")
    assert first.created and not again.created and again.task_id == first.task_id
    other = up.received({"classes": ["dog"]})
    with pytest.raises(IdempotencyMismatch, match="Idempotency-Key 'k-1' was already used for a different request"):
        register_task(sessions, store, other, tmp_path / "w3", limits, idempotency_key="k-1")
    assert leftovers(env)[:2] == (1, 3)


# --- the public view and cancel ------------------------------------------------------------------
def test_progress_view_derives_the_eta():
    report = {"epoch": 2, "epochs": 3, "step": 5, "steps": 10, "loss": 0.5, "images_per_s": 4.0, "lr": 0.01,
              "updated_at": "2030-01-01T00:00:00+00:00"}
    view = progress_view(report, 8, None)
    # left: 5 steps of epoch 2 and 10 of epoch 3 = 15 steps x 8 images / 4 images/s
    assert view.eta_s == 30.0 and view.loss == 0.5 and view.updated_at.year == 2030
    assert progress_view(report, 8, None, running=False).eta_s is None
    assert progress_view({"epoch": 1}, 8, None).eta_s is None
    assert progress_view(None, 8, None) is None


def test_cancel_of_running_and_finished_tasks_and_listing(env, tmp_path):
    _, sessions, _ = env
    first = register(env, tmp_path, {"classes": ["cat"]})
    second = register(env, tmp_path, {"classes": ["dog"]})
    with session_scope(sessions) as s:
        s.get(Task, first.task_id).status = TaskStatus.RUNNING.value
    with session_scope(sessions) as s:
        assert cancel_task(s, first.task_id) is False
    with sessions() as s:
        task = s.get(Task, first.task_id)
        assert task.status == "running" and task.cancel_requested
        assert [v.id for v in list_task_views(s)] == [second.task_id, first.task_id]
        assert [v.id for v in list_task_views(s, "running")] == [first.task_id]
        assert task_view(s, second.task_id).items == {"train": 4, "val": 1}
        with pytest.raises(ValueError, match="unknown status 'done'"):
            list_task_views(s, "done")
    with session_scope(sessions) as s:
        s.get(Task, first.task_id).status = TaskStatus.FAILED.value
    with session_scope(sessions) as s, pytest.raises(TaskFinished, match="already failed"):
        cancel_task(s, first.task_id)
