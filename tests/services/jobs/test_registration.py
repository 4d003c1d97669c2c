"""Registering a task of a model: spec validation, all-or-nothing storage, class indices, lineage,
views, cancel; and that each model has its own classes, order of steps and architecture."""

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
from services.db.models import Alias, DatasetItem, Model, ModelVersion, SemanticClass, Task, TaskStatus
from services.db.session import make_engine, make_session_factory, session_scope
from services.jobs.errors import IdempotencyMismatch, RegistrationConflict, TaskFinished
from services.jobs.lifecycle import request_cancel as cancel_task
from services.jobs.registration import IngestLimits, register_task, validation_stems
from services.jobs.spec import TaskDefaults, parse_spec
from services.jobs.views import list_task_views, progress_view, task_view
from services.registry.models import ModelNotFound, create_model
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
    """Settings, sessions and store of a service holding one empty model, "m"."""
    sessions = make_session_factory(make_engine(prepared))
    env = prepared, sessions, open_store(prepared)
    new_model(env, "m")
    return env


def new_model(env, name: str) -> int:
    with session_scope(env[1]) as s:
        return create_model(s, name).id


def model_id(env, name: str = "m") -> int:
    with env[1]() as s:
        return s.scalar(select(Model.id).where(Model.name == name))


def register(env, tmp_path, spec, n=5, n_classes=None, key=None, store=None, model="m", defaults=TaskDefaults()):
    settings, sessions, real_store = env
    n_classes = len(spec["classes"]) + len(spec.get("also_labelled", [])) if n_classes is None else n_classes
    up = Upload(tmp_path / f"up-{np.random.default_rng().integers(1 << 30)}").dataset(n, n_classes)
    work = up.root / "work"
    return register_task(sessions, store or real_store, model_id(env, model) or -1, up.received(spec), work,
                         IngestLimits.from_settings(settings), idempotency_key=key, defaults=defaults)


def leftovers(env) -> tuple[int, int, int, int]:
    """(tasks, dataset items, classes, stored objects) across every model."""
    _, sessions, store = env
    with sessions() as s:
        counts = tuple(s.scalar(select(func.count()).select_from(t)) for t in (Task, DatasetItem, SemanticClass))
    return (*counts, len(list(store.list("models/"))))


def classes_of(env, name: str = "m") -> dict[int, tuple[str, str | None]]:
    """{index: (name, introducing task)} of one model."""
    with env[1]() as s:
        rows = s.scalars(select(SemanticClass).where(SemanticClass.model_id == model_id(env, name)))
        return {c.id: (c.name, c.task_id) for c in rows}


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
    ({"classes": ["a"], "architecture": "resnet9000"}, "unknown architecture 'resnet9000'"),
    ({"classes": ["a"], "model": "fcn_resnet50"}, "`model` is now `architecture`"),
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
    assert spec.classes == ["cat", "dog"] and spec.epochs == 30 and spec.image_size is None  # resolved by registering
    assert spec.batch_size == 8 and spec.val_fraction == 0.1 and spec.mask_format == "index"
    assert spec.hyperparameters.lr == 0.02 and spec.hyperparameters.momentum is None and spec.architecture is None
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
    mid = model_id(env)
    reg = register(env, tmp_path, {"classes": ["cat", "dog"], "epochs": 3}, n=6)
    assert reg.created
    with sessions() as s:
        task = s.get(Task, reg.task_id)
        assert task.status == "queued" and task.parent_version is None and task.model_id == mid
        assert task.spec["assigned_classes"] == {"cat": 1, "dog": 2}
        # The service's defaults (STRATA_DEFAULT_ARCHITECTURE, STRATA_DEFAULT_IMAGE_SIZE): a network a CPU trains.
        assert task.spec["method"] == "mib" and task.spec["architecture"] == "lraspp_mobilenet_v3_large"
        assert task.spec["image_size"] == 256
        assert "model" not in task.spec
        assert task.spec["after_task_id"] is None and task.spec["epochs"] == 3
        assert s.get(Model, mid).architecture == "lraspp_mobilenet_v3_large"  # the first task fixes it
        items = list(s.scalars(select(DatasetItem).where(DatasetItem.task_id == task.id)))
    assert classes_of(env) == {0: ("background", None), 1: ("cat", reg.task_id), 2: ("dog", reg.task_id)}
    assert len(items) == 6 and sorted(i.split for i in items).count("val") == 1
    prefix = f"models/{mid}/datasets/{reg.task_id}/"
    keys = {i.key for i in store.list(prefix)}
    for item in items:
        assert item.image_key == f"{prefix}images/{item.stem}.jpg" and item.image_key in keys
        assert item.mask_key == f"{prefix}masks/{item.stem}.png" and item.mask_key in keys
        assert store.stat(item.image_key).size == item.image_bytes and (item.width, item.height) == (16, 12)
        with store.open(item.mask_key) as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == item.mask_sha256
        seed = int(item.stem.removeprefix("img"))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), index_mask(seed, 2))
    assert len(keys) == 12


def test_a_later_task_queues_behind_the_pending_one_and_inherits_the_architecture(env, tmp_path):
    _, sessions, _ = env
    first = register(env, tmp_path, {"classes": ["cat", "dog"], "architecture": "lraspp_mobilenet_v3_large"})
    second = register(env, tmp_path, {"classes": ["bird"], "also_labelled": ["cat"]})
    with sessions() as s:
        task = s.get(Task, second.task_id)
        assert task.spec["after_task_id"] == first.task_id and task.parent_version is None
        assert task.spec["assigned_classes"] == {"bird": 3}
        assert task.spec["architecture"] == "lraspp_mobilenet_v3_large"
    # Naming the architecture it already has is fine; another one is refused, naming the field.
    same = register(env, tmp_path, {"classes": ["owl"], "architecture": "lraspp_mobilenet_v3_large"})
    with pytest.raises(UploadRejected) as err:
        register(env, tmp_path, {"classes": ["cow"], "architecture": "fcn_resnet50"})
    assert "architecture: only a model's first task chooses it" in str(err.value)
    assert "model 'm' is a 'lraspp_mobilenet_v3_large'" in str(err.value) and "`architecture`" in str(err.value)
    with pytest.raises(UploadRejected, match="also_labelled names classes that model 'm' does not have: unicorn"):
        register(env, tmp_path, {"classes": ["cow"], "also_labelled": ["unicorn"]})
    with pytest.raises(RegistrationConflict, match="model 'm' already has classes dog"):
        register(env, tmp_path, {"classes": ["cow", "dog"]})
    with pytest.raises(ModelNotFound, match="model -1 no longer exists"):
        register(env, tmp_path, {"classes": ["cow"]}, model="nope")
    with sessions() as s:
        assert s.get(Task, same.task_id).spec["after_task_id"] == second.task_id
    assert leftovers(env)[:2] == (3, 15)


def trained(env, task_id: str, version: int, architecture: str, image_size: int = 256) -> None:
    """What the worker and the registry record for a trained task (without training it)."""
    with session_scope(env[1]) as s:
        task = s.get(Task, task_id)
        s.add(ModelVersion(model_id=task.model_id, version=version, task_id=task_id, architecture=architecture,
                           method="ft", hyperparameters={"image_size": image_size}, class_map={"0": "background", "1": "cat"}, num_classes=2,
                           checkpoint_key=f"models/{task.model_id}/checkpoints/{version}/model.pt",
                           checkpoint_sha256="0" * 64, checkpoint_bytes=1))
        s.flush()
        task.status, task.model_version = TaskStatus.SUCCEEDED.value, version


def test_with_nothing_pending_a_task_starts_from_production(env, tmp_path):
    _, sessions, _ = env
    first = register(env, tmp_path, {"classes": ["cat"], "architecture": "fcn_resnet50"})
    trained(env, first.task_id, 1, "fcn_resnet50")
    # A version but no production alias: adding classes would silently start a new base model.
    with pytest.raises(RegistrationConflict, match="model 'm' has no version in production"):
        register(env, tmp_path, {"classes": ["dog"]})
    with session_scope(sessions) as s:
        s.add(Alias(model_id=model_id(env), name="production", version=1))
    second = register(env, tmp_path, {"classes": ["dog"]})
    with sessions() as s:
        task = s.get(Task, second.task_id)
        assert task.parent_version == 1 and task.spec["after_task_id"] is None
        assert task.spec["architecture"] == "fcn_resnet50"


def test_a_deployments_defaults_build_the_first_task_and_later_tasks_inherit_its_image_size(env, tmp_path):
    _, sessions, _ = env
    gpu = TaskDefaults(architecture="deeplabv3_resnet101", image_size=512)  # what docker-compose.yml sets
    first = register(env, tmp_path, {"classes": ["cat"]}, defaults=gpu)
    queued = register(env, tmp_path, {"classes": ["dog"]})  # behind the first: inherits from it
    sized = register(env, tmp_path, {"classes": ["owl"], "image_size": 320})  # a spec's own size wins
    with sessions() as s:
        specs = [s.get(Task, r.task_id).spec for r in (first, queued, sized)]
    assert [(x["architecture"], x["image_size"]) for x in specs] == [
        ("deeplabv3_resnet101", 512), ("deeplabv3_resnet101", 512), ("deeplabv3_resnet101", 320)]
    # Once trained, a task with nothing pending takes production's image size, not the service's default.
    with session_scope(sessions) as s:
        for r in (queued, sized):
            cancel_task(s, r.task_id)
    trained(env, first.task_id, 1, "deeplabv3_resnet101", image_size=512)
    with session_scope(sessions) as s:
        s.add(Alias(model_id=model_id(env), name="production", version=1))
    later = register(env, tmp_path, {"classes": ["cow"]})
    with sessions() as s:
        assert s.get(Task, later.task_id).spec["image_size"] == 512


@pytest.mark.parametrize("architecture, images, val_fraction, refused", [
    ("deeplabv3_mobilenet_v3_large", 2, 0.1, True),  # one left to train: ASPP's BatchNorm cannot take a batch of 1
    ("deeplabv3_mobilenet_v3_large", 2, 0.0, False),
    ("deeplabv3_mobilenet_v3_large", 3, 0.1, False),
    ("lraspp_mobilenet_v3_large", 2, 0.1, False),  # no BatchNorm on a pooled map: trains on one image
])
def test_an_upload_a_network_cannot_train_on_is_refused_at_submission(env, tmp_path, architecture, images,
                                                                       val_fraction, refused):
    spec = {"classes": ["cat"], "architecture": architecture, "val_fraction": val_fraction}
    if not refused:
        assert register(env, tmp_path, spec, n=images).created
        return
    with pytest.raises(UploadRejected) as err:
        register(env, tmp_path, spec, n=images)
    assert str(err.value) == (
        "invalid spec: val_fraction: the upload leaves 1 training image once val_fraction 0.1 kept 1 for validation; "
        "a deeplabv3_mobilenet_v3_large trains on batches of at least 2 images (send more images, or set "
        "val_fraction 0)")
    assert leftovers(env) == (0, 0, 0, 0)


def test_a_cancelled_task_gives_back_its_indices_and_names(env, tmp_path):
    _, sessions, _ = env
    first = register(env, tmp_path, {"classes": ["cat", "dog"]})
    with session_scope(sessions) as s:
        assert cancel_task(s, first.task_id) is True
    with sessions() as s:
        assert s.get(Task, first.task_id).status == "cancelled"
    assert classes_of(env) == {0: ("background", None)}
    again = register(env, tmp_path, {"classes": ["dog"]})
    with sessions() as s:
        assert s.get(Task, again.task_id).spec["assigned_classes"] == {"dog": 1}  # no version ever used 1
        assert s.get(Task, again.task_id).spec["after_task_id"] is None  # the cancelled one is not pending


def test_bad_files_are_rejected_before_anything_is_stored(env, tmp_path):
    register(env, tmp_path, {"classes": ["cat"]})
    before = leftovers(env)
    with pytest.raises(UploadRejected, match=r"has values 2 outside the declared classes"):
        register(env, tmp_path, {"classes": ["dog"]}, n_classes=2)
    assert leftovers(env) == before


class RacingStore:
    """The real store; while our files upload, another request registers the class 'dog' in the
    model ``model_id`` (the real sequence of a concurrent registration, made deterministic)."""

    def __init__(self, store, sessions, model_id: int) -> None:
        self.store, self.sessions, self.model_id, self.raced = store, sessions, model_id, False

    def __getattr__(self, name):
        return getattr(self.store, name)

    def put_file(self, key, path, content_type="application/octet-stream"):
        if not self.raced:
            self.raced = True
            with session_scope(self.sessions) as s:
                s.add(SemanticClass(model_id=self.model_id, id=50, name="dog", task_id=None))
        return self.store.put_file(key, path, content_type)


def test_a_failure_after_storing_deletes_the_objects_and_writes_no_rows(env, tmp_path):
    _, sessions, store = env
    racing = RacingStore(store, sessions, model_id(env))
    with pytest.raises(RegistrationConflict, match="model 'm' already has classes dog"):
        register(env, tmp_path, {"classes": ["dog"]}, n=6, store=racing)
    assert racing.raced
    assert leftovers(env) == (0, 0, 1, 0)  # only the racing request's class row


def test_a_class_registered_meanwhile_in_another_model_is_no_conflict(env, tmp_path):
    _, sessions, store = env
    racing = RacingStore(store, sessions, new_model(env, "other"))
    reg = register(env, tmp_path, {"classes": ["dog"]}, n=6, store=racing)
    assert racing.raced and reg.created
    assert classes_of(env) == {0: ("background", None), 1: ("dog", reg.task_id)}
    assert classes_of(env, "other") == {50: ("dog", None)}


def test_idempotency_key_replays_the_same_request_and_refuses_another(env, tmp_path):
    settings, sessions, store = env
    up = Upload(tmp_path / "up").dataset(3, 1)
    received = up.received({"classes": ["cat"]})
    limits = IngestLimits.from_settings(settings)
    m = model_id(env)
    first = register_task(sessions, store, m, received, tmp_path / "w1", limits, idempotency_key="k-1")
    again = register_task(sessions, store, m, received, tmp_path / "w2", limits, idempotency_key="k-1")
    assert first.created and not again.created and again.task_id == first.task_id
    other = up.received({"classes": ["dog"]})
    with pytest.raises(IdempotencyMismatch, match="Idempotency-Key 'k-1' was already used for a different request"):
        register_task(sessions, store, m, other, tmp_path / "w3", limits, idempotency_key="k-1")
    assert leftovers(env) == (1, 3, 2, 6)  # m's task, items and classes (background, cat) only
    # Keys are per model: the same key for another model is that model's first request with it.
    elsewhere = register_task(sessions, store, new_model(env, "other"), received, tmp_path / "w4", limits,
                              idempotency_key="k-1")
    assert elsewhere.created and elsewhere.task_id != first.task_id


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
    mid, other_id = model_id(env), new_model(env, "other")
    other = register(env, tmp_path, {"classes": ["cat"]}, model="other")
    with session_scope(sessions) as s:
        s.get(Task, first.task_id).status = TaskStatus.RUNNING.value
    with session_scope(sessions) as s:
        assert cancel_task(s, first.task_id) is False
    with sessions() as s:
        task = s.get(Task, first.task_id)
        assert task.status == "running" and task.cancel_requested
        assert [v.id for v in list_task_views(s)] == [other.task_id, second.task_id, first.task_id]
        assert [v.id for v in list_task_views(s, model_ids=[mid])] == [second.task_id, first.task_id]
        assert [v.id for v in list_task_views(s, model_ids=[other_id])] == [other.task_id]
        assert [v.id for v in list_task_views(s, "running")] == [first.task_id]
        view = task_view(s, second.task_id)
        assert view.items == {"train": 4, "val": 1} and view.model == "m"
        assert view.architecture == "lraspp_mobilenet_v3_large" and view.classes == {"dog": 2}
        assert task_view(s, other.task_id).model == "other" and task_view(s, other.task_id).classes == {"cat": 1}
        with pytest.raises(ValueError, match="unknown status 'done'"):
            list_task_views(s, "done")
    with session_scope(sessions) as s:
        s.get(Task, first.task_id).status = TaskStatus.FAILED.value
    with session_scope(sessions) as s, pytest.raises(TaskFinished, match="already failed"):
        cancel_task(s, first.task_id)


# --- several models --------------------------------------------------------------------------------
def test_each_model_queues_its_own_tasks(env, tmp_path):
    """A model's task queues behind that model's pending task only: a task of another model never
    waits for it (and starts from its own model's state)."""
    _, sessions, _ = env
    new_model(env, "b")
    a_first = register(env, tmp_path, {"classes": ["cat"]})
    b_first = register(env, tmp_path, {"classes": ["cat"]}, model="b")
    a_second = register(env, tmp_path, {"classes": ["dog"]})
    b_second = register(env, tmp_path, {"classes": ["dog"]}, model="b")
    with sessions() as s:
        after = {t: s.get(Task, t).spec["after_task_id"]
                 for t in (a_first.task_id, b_first.task_id, a_second.task_id, b_second.task_id)}
        assert {s.get(Task, t).parent_version for t in after} == {None}
    assert after == {a_first.task_id: None, b_first.task_id: None,
                     a_second.task_id: a_first.task_id, b_second.task_id: b_first.task_id}
    # Model b's first task finishing (and its version in production) changes nothing for model a.
    trained(env, b_first.task_id, 1, "deeplabv3_resnet101")
    with session_scope(sessions) as s:
        s.add(Alias(model_id=model_id(env, "b"), name="production", version=1))
    trained(env, b_second.task_id, 2, "deeplabv3_resnet101")
    a_third = register(env, tmp_path, {"classes": ["owl"]})
    b_third = register(env, tmp_path, {"classes": ["owl"]}, model="b")
    with sessions() as s:
        assert (s.get(Task, a_third.task_id).spec["after_task_id"], s.get(Task, a_third.task_id).parent_version) == (
            a_second.task_id, None)
        assert (s.get(Task, b_third.task_id).spec["after_task_id"], s.get(Task, b_third.task_id).parent_version) == (
            None, 1)


def test_class_indices_and_names_are_per_model(env, tmp_path):
    """The same class names in two models: each model numbers its classes from 1, and one
    model's classes (or burnt indices) never collide with another's."""
    new_model(env, "b")
    a = register(env, tmp_path, {"classes": ["cat", "dog"]})
    b = register(env, tmp_path, {"classes": ["dog", "cat"]}, model="b")
    assert classes_of(env) == {0: ("background", None), 1: ("cat", a.task_id), 2: ("dog", a.task_id)}
    assert classes_of(env, "b") == {0: ("background", None), 1: ("dog", b.task_id), 2: ("cat", b.task_id)}
    # also_labelled names the model's own classes; another model's are unknown here.
    new_model(env, "c")
    with pytest.raises(UploadRejected, match="also_labelled names classes that model 'c' does not have: cat"):
        register(env, tmp_path, {"classes": ["owl"], "also_labelled": ["cat"]}, model="c")
    # Indices are the model's own: cancelling in a does not move b's numbering.
    with session_scope(env[1]) as s:
        assert cancel_task(s, a.task_id) is True
    b_next = register(env, tmp_path, {"classes": ["owl"], "also_labelled": ["cat"]}, model="b")
    a_next = register(env, tmp_path, {"classes": ["owl"]})
    with env[1]() as s:
        assert s.get(Task, b_next.task_id).spec["assigned_classes"] == {"owl": 3}
        # a's cancelled task never produced a version: its indices 1 and 2 are free again.
        assert s.get(Task, a_next.task_id).spec["assigned_classes"] == {"owl": 1}
    assert classes_of(env)[1] == ("owl", a_next.task_id) and 2 not in classes_of(env)
    assert classes_of(env, "b")[3] == ("owl", b_next.task_id) and classes_of(env, "b")[1][0] == "dog"


def test_each_models_first_task_chooses_its_architecture(env, tmp_path):
    _, sessions, _ = env
    new_model(env, "b")
    register(env, tmp_path, {"classes": ["cat"], "architecture": "lraspp_mobilenet_v3_large"})
    b = register(env, tmp_path, {"classes": ["cat"], "architecture": "fcn_resnet50"}, model="b")
    with sessions() as s:
        assert s.get(Task, b.task_id).spec["architecture"] == "fcn_resnet50"
        assert {m.name: m.architecture for m in s.scalars(select(Model))} == {
            "m": "lraspp_mobilenet_v3_large", "b": "fcn_resnet50"}
    with pytest.raises(UploadRejected, match="model 'b' is a 'fcn_resnet50'"):
        register(env, tmp_path, {"classes": ["dog"], "architecture": "lraspp_mobilenet_v3_large"}, model="b")


# --- class indices are bounded: none for a class nothing shows, and failed tasks give theirs back ---
def test_a_declared_class_that_no_mask_labels_is_rejected_naming_it(env, tmp_path):
    with pytest.raises(UploadRejected, match=r"classes: no mask labels owl, emu; a task's new classes must"):
        register(env, tmp_path, {"classes": ["cat", "dog", "owl", "emu"]}, n_classes=2)
    assert leftovers(env) == (0, 0, 0, 0)


def every_index_upload(root: Path, count: int) -> Upload:
    """Two 16x16 images whose masks show local values 1..count (at most 254), one pixel each."""
    up = Upload(root)
    mask = np.zeros((16, 16), np.uint8)
    mask.flat[1:count + 1] = np.arange(1, count + 1)
    for i in range(2):
        up.add("images", f"img{i}.png", encode(np.full((16, 16, 3), 40 * i, np.uint8)))
        up.add("masks", f"img{i}.png", encode(mask))
    return up


def test_a_cancelled_task_that_took_every_index_gives_them_back(env, tmp_path):
    settings, sessions, store = env
    names = [f"c{i}" for i in range(1, 255)]
    up = every_index_upload(tmp_path / "all", len(names))
    greedy = register_task(sessions, store, model_id(env), up.received({"classes": names}), up.root / "work",
                           IngestLimits.from_settings(settings))
    with pytest.raises(RegistrationConflict, match="no class indices left"):
        register(env, tmp_path, {"classes": ["late"]})  # while it is pending, its indices are taken
    with session_scope(sessions) as s:
        assert cancel_task(s, greedy.task_id) is True
    after = register(env, tmp_path, {"classes": ["late"]})
    with sessions() as s:
        assert s.get(Task, after.task_id).spec["assigned_classes"] == {"late": 1}
