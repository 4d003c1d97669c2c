"""Migration 0003 from a single-model deployment: a database populated at revision 0002 with the
rows a real deployment has (classes, a succeeded task with its items and version, per-class
metrics, aliases, a queued task behind it, API keys) and a checkpoint stored under the old key
layout. After the upgrade everything belongs to the model ``default``, the API reads and serves it
(the old object still loads), new models get their own ids and indices, and the way back works
while one model exists. On SQLite and Postgres (and both object stores, through ``settings``)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from services.auth import generate_key, hash_key
from services.db import migrate
from services.db.session import make_engine
from services.learning.checkpoint import save_model
from services.learning.classmap import channel_names
from services.storage import open_store
from tests.conftest import bearer
from tests.services.inference.helpers import ARCH, constant_model, png_bytes, random_image

CLASSES = {0: "background", 1: "cat", 2: "dog"}
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
LEGACY_KEY = "checkpoints/1/model-0123456789abcdef.pt"


def populate_0002(settings, store) -> dict[str, str]:
    """Rows as a single-model deployment at revision 0002 has them; returns the plaintext keys."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        digest = save_model(path, constant_model(len(CLASSES), winner=2), channel_names(CLASSES), {"version": 1})
        info = store.put_file(LEGACY_KEY, path)
    engine = make_engine(settings)
    md = sa.MetaData()
    md.reflect(engine)
    t = md.tables
    admin, infer = generate_key(), generate_key()
    with engine.begin() as c:
        c.execute(t["tasks"].insert(), [
            {"id": "task-a", "kind": "train", "status": "succeeded", "attempts": 1, "cancel_requested": False,
             "spec": {"classes": ["cat", "dog"], "method": "mib", "model": ARCH, "epochs": 1, "image_size": 32,
                      "batch_size": 2, "val_fraction": 0.25, "assigned_classes": {"cat": 1, "dog": 2}},
             "created_at": T0, "updated_at": T0, "started_at": T0, "finished_at": T0 + timedelta(minutes=5)},
        ])
        c.execute(t["classes"].insert(), [
            {"id": 0, "name": "background", "task_id": None, "created_at": T0},
            {"id": 1, "name": "cat", "task_id": "task-a", "created_at": T0},
            {"id": 2, "name": "dog", "task_id": "task-a", "created_at": T0},
        ])
        c.execute(t["dataset_items"].insert(), [
            {"task_id": "task-a", "stem": "img0", "split": "train", "image_key": "datasets/task-a/images/img0.png",
             "image_sha256": "1" * 64, "image_bytes": 10, "mask_key": "datasets/task-a/masks/img0.png",
             "mask_sha256": "2" * 64, "mask_bytes": 10, "width": 32, "height": 32},
        ])
        c.execute(t["model_versions"].insert(), [
            {"version": 1, "parent_version": None, "task_id": "task-a", "architecture": ARCH, "method": "mib",
             "hyperparameters": {"image_size": 32}, "class_map": {str(k): v for k, v in CLASSES.items()},
             "num_classes": 3, "checkpoint_key": LEGACY_KEY, "checkpoint_sha256": digest,
             "checkpoint_bytes": info.size, "miou_old": None, "miou_new": 0.5, "miou_all": 0.6,
             "promotion": {"promote": True, "summary": "v1 may be production", "reasons": ["ok"],
                           "old_miou_drop_points": None, "worst_old_class": None,
                           "worst_old_class_drop_points": None},
             "created_at": T0 + timedelta(minutes=5)},
        ])
        c.execute(t["tasks"].update().where(t["tasks"].c.id == "task-a").values(model_version=1))
        c.execute(t["class_metrics"].insert(), [
            {"version": 1, "class_index": i, "iou": iou, "tp": tp, "fp": 1, "fn": 1, "forgetting": None}
            for i, iou, tp in ((0, 0.8, 8), (1, 0.5, 2), (2, 0.5, 2))
        ])
        c.execute(t["aliases"].insert(), [
            {"name": "production", "version": 1, "updated_at": T0}, {"name": "latest", "version": 1, "updated_at": T0},
        ])
        c.execute(t["tasks"].insert(), [
            {"id": "task-b", "kind": "train", "status": "queued", "attempts": 0, "cancel_requested": False,
             "parent_version": 1, "spec": {"classes": ["bird"], "method": "mib", "model": ARCH, "epochs": 1,
                                           "image_size": 32, "batch_size": 2, "val_fraction": 0.25,
                                           "assigned_classes": {"bird": 3}, "after_task_id": None},
             "created_at": T0 + timedelta(hours=1), "updated_at": T0 + timedelta(hours=1)},
        ])
        c.execute(t["classes"].insert(), [{"id": 3, "name": "bird", "task_id": "task-b", "created_at": T0}])
        c.execute(t["api_keys"].insert(), [
            {"name": "ops admin", "prefix": admin[:12], "key_hash": hash_key(admin), "scopes": "admin",
             "created_at": T0},
            {"name": "camera", "prefix": infer[:12], "key_hash": hash_key(infer), "scopes": "infer", "created_at": T0},
        ])
    engine.dispose()
    return {"admin": admin, "infer": infer}


@contextmanager
def database(settings, *, write: bool = False) -> Iterator[sa.Connection]:
    """A connection to the settings' database (in a transaction committed at the end with ``write``)."""
    engine = make_engine(settings)
    try:
        with engine.begin() if write else engine.connect() as c:
            yield c
    finally:
        engine.dispose()


def stored_spec(c: sa.Connection, task_id: str) -> dict:
    spec = c.execute(sa.text("SELECT spec FROM tasks WHERE id = :id"), {"id": task_id}).scalar()
    return spec if isinstance(spec, dict) else json.loads(spec)


@pytest.fixture
def at_0002(settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings, "0002")
    store = open_store(settings)
    store.ensure_ready()
    return settings, store, populate_0002(settings, store)


def test_upgrade_moves_a_single_model_deployment_into_default(at_0002):
    settings, store, keys = at_0002
    migrate.upgrade(settings)
    with database(settings) as c:
        models = c.execute(sa.text("SELECT id, name, architecture, last_version FROM models")).all()
        assert [tuple(m) for m in models] == [(1, "default", ARCH, 1)]
        for table in ("classes", "tasks", "model_versions", "class_metrics", "aliases"):
            assert c.execute(sa.text(f"SELECT DISTINCT model_id FROM {table}")).scalars().all() == [1], table
        spec = stored_spec(c, "task-a")
        assert spec["architecture"] == ARCH and "model" not in spec
        assert c.execute(sa.text("SELECT COUNT(*) FROM api_keys WHERE all_models")).scalar() == 2

    with TestClient(create_app(settings)) as client:
        admin, infer = bearer(keys["admin"]), bearer(keys["infer"])
        v1 = client.get("/models/default/versions/production", headers=admin)
        assert v1.status_code == 200, v1.text
        body = v1.json()
        assert (body["model"], body["version"], body["checkpoint"]["key"]) == ("default", 1, LEGACY_KEY)
        assert body["iou"] == {"background": 0.8, "cat": 0.5, "dog": 0.5}
        assert body["promotion"]["summary"] == "v1 may be production"
        classes = client.get("/models/default/classes", headers=admin).json()
        assert [(c["index"], c["name"]) for c in classes] == [(0, "background"), (1, "cat"), (2, "dog"), (3, "bird")]
        task = client.get("/tasks/task-b", headers=admin).json()
        assert (task["model"], task["status"], task["architecture"], task["classes"]) == (
            "default", "queued", ARCH, {"bird": 3})
        # The checkpoint under the old key layout is served as it is.
        r = client.post("/models/default/segment", headers=infer,
                        files={"image": ("x.png", png_bytes(random_image(20, 12)), "image/png")})
        assert r.status_code == 200, r.text
        assert (r.json()["model"], r.json()["model_version"], r.json()["classes"]) == ("default", 1, {"dog": 240})
        # A new model gets a fresh id (the Postgres sequence moved past the migrated one) and its own indices.
        assert client.post("/models", json={"name": "second"}, headers=admin).status_code == 201
        m2 = client.get("/models/second", headers=admin).json()
        assert (m2["versions"], m2["classes"], m2["production"]) == (0, 0, None)
    with database(settings) as c:
        assert c.execute(sa.text("SELECT id FROM models WHERE name = 'second'")).scalar() == 2
    assert store.exists(LEGACY_KEY)


def test_downgrade_back_to_0002_with_one_model(at_0002):
    settings, _store, _keys = at_0002
    migrate.upgrade(settings)
    migrate.downgrade(settings, "0002")
    with database(settings) as c:
        assert c.execute(sa.text("SELECT version, task_id FROM model_versions")).all() == [(1, "task-a")]
        assert c.execute(sa.text("SELECT COUNT(*) FROM classes")).scalar() == 4
        spec = stored_spec(c, "task-b")
        assert spec["model"] == ARCH and "architecture" not in spec
        assert "models" not in sa.inspect(c).get_table_names()
    migrate.upgrade(settings)  # and up again
    assert migrate.current(settings) == migrate.head_revision()


def test_downgrade_refused_with_two_models(at_0002):
    settings, _store, _keys = at_0002
    migrate.upgrade(settings, "0003")
    with database(settings, write=True) as c:
        c.execute(sa.text("INSERT INTO models (name, description, created_at, updated_at) "
                          "VALUES ('other', '', :t, :t)"), {"t": T0})
    with pytest.raises(RuntimeError, match="2 models exist"):
        migrate.downgrade(settings, "0002")
    assert migrate.current(settings) == "0003"
