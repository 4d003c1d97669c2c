"""POST and GET /models/{name}/tasks, GET /tasks, GET /tasks/{id}, POST /tasks/{id}/cancel on both
backends: per model, across models, and what a key limited to some models may do."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from api.queue import TaskQueue
from services.auth import create_key
from services.db.models import DatasetItem, Model, SemanticClass, Task, TaskStatus
from services.db.session import make_engine, make_session_factory, session_scope
from services.registry.models import get_model
from services.storage import open_store


# --- helpers (also used by test_tasks_bad_input) --------------------------------------------------
def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def photo(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def index_mask(seed: int, n_classes: int, h: int = 12, w: int = 16) -> np.ndarray:
    values = np.zeros((h, w), np.uint8)
    for k in range(1, n_classes + 1):
        values[(seed + 2 * k) % h] = k
    values[-1, -1] = 255
    return values


def dataset(n: int, n_classes: int, fmt: str = "JPEG") -> dict[str, list[tuple[str, bytes]]]:
    """{"images": [(name, bytes)], "masks": [(name, bytes)]} of n index-mask pairs."""
    ext = ".jpg" if fmt == "JPEG" else ".png"
    return {"images": [(f"img{i:02d}{ext}", encode(photo(i), fmt)) for i in range(n)],
            "masks": [(f"img{i:02d}.png", encode(index_mask(i, n_classes))) for i in range(n)]}


def as_files(data: dict[str, list[tuple[str, bytes]]]) -> list:
    return [(field, (name, blob, "application/octet-stream")) for field, items in data.items() for name, blob in items]


def as_zip(data: dict[str, list[tuple[str, bytes]]], extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for field, items in data.items():
            for name, blob in items:
                zf.writestr(f"{field}/{name}", blob)
        for name, blob in (extra or {}).items():
            zf.writestr(name, blob)
    return buf.getvalue()


MODEL = "m"  # the model the tests register tasks of, unless they say otherwise


def post_task(client, headers, spec, files=None, archive: bytes | None = None, model: str = MODEL, **kw):
    parts = as_files(files) if files is not None else []
    if archive is not None:
        parts.append(("archive", ("data.zip", archive, "application/zip")))
    data = {"spec": spec if isinstance(spec, str) else json.dumps(spec)}
    return client.post(f"/models/{model}/tasks", data=data, files=parts, headers=headers, **kw)


def create_model(client, headers, name: str = MODEL) -> dict:
    r = client.post("/models", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def bearer(settings, *scopes: str, models: list[str] | None = None) -> dict[str, str]:
    """A new key with ``scopes``, for every model or only the models named in ``models``."""
    with session_scope(make_session_factory(make_engine(settings))) as s:
        rows = None if models is None else [get_model(s, name) for name in models]
        _, plaintext = create_key(s, f"test {' '.join(scopes)}", scopes, models=rows)
    return {"Authorization": f"Bearer {plaintext}"}


def model_id(settings, name: str = MODEL) -> int:
    with make_session_factory(make_engine(settings))() as s:
        return s.scalar(select(Model.id).where(Model.name == name))


def leftovers(settings) -> dict[str, int]:
    """Rows and objects a rejected request must not leave behind."""
    with make_session_factory(make_engine(settings))() as s:
        rows = {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in (Task, DatasetItem, SemanticClass)}
    return {**rows, "objects": len(list(open_store(settings).list("models/"))),
            "messages": queued_messages(settings)}


def queued_messages(settings) -> int:
    """Messages waiting on the training queue (nothing consumes them in these tests)."""
    with TaskQueue(settings).app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(settings.training_queue, passive=False).message_count


@pytest.fixture
def admin(client, prepared):
    """An admin key for every model, and the model "m" it created."""
    headers = bearer(prepared, "admin")
    create_model(client, headers)
    return headers


@pytest.fixture
def reader(prepared):
    return bearer(prepared, "infer")


# --- registering --------------------------------------------------------------------------------
def test_post_index_masks_as_files(client, prepared, admin, reader):
    r = post_task(client, admin, {"classes": ["car", "person"], "epochs": 2}, dataset(6, 2))
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/tasks/{body['id']}"
    assert body["status"] == "queued" and body["classes"] == {"car": 1, "person": 2}
    # The service's default network (STRATA_DEFAULT_ARCHITECTURE): one a machine without a GPU trains in minutes.
    assert body["model"] == "m" and body["method"] == "mib" and body["architecture"] == "lraspp_mobilenet_v3_large"
    assert body["items"] == {"train": 5, "val": 1} and body["progress"] is None
    assert client.get(r.headers["location"], headers=reader).json() == body
    assert client.get("/models/m/tasks", headers=reader).json() == [body]
    assert client.get("/models/m", headers=reader).json()["architecture"] == "lraspp_mobilenet_v3_large"
    assert queued_messages(prepared) == 1
    prefix = f"models/{model_id(prepared)}/datasets/{body['id']}/"
    keys = [o.key for o in open_store(prepared).list(prefix)]
    assert len(keys) == 12 and f"{prefix}images/img00.jpg" in keys


def test_a_deployments_default_architecture_and_image_size_build_a_first_task(prepared):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from services.db.models import Task
    from services.db.session import make_engine, make_session_factory

    gpu = prepared.model_copy(update={"default_architecture": "fcn_resnet50", "default_image_size": 320})
    with TestClient(create_app(gpu)) as client:
        admin = bearer(gpu, "admin")
        create_model(client, admin)
        r = post_task(client, admin, {"classes": ["car"]}, dataset(4, 1))
        assert r.status_code == 202, r.text
        assert r.json()["architecture"] == "fcn_resnet50"
    engine = make_engine(prepared)
    with make_session_factory(engine)() as s:
        assert s.get(Task, r.json()["id"]).spec["image_size"] == 320
    engine.dispose()


def test_post_palette_masks_as_a_zip(client, prepared, admin):
    assert post_task(client, admin, {"classes": ["car"]}, dataset(3, 1)).status_code == 202
    palette = {"bike": [0, 128, 192], "car": [64, 0, 128]}
    data = {"images": [], "masks": []}
    for i in range(4):
        colours = np.zeros((12, 16, 3), np.uint8)
        colours[2:4] = palette["bike"]
        colours[6] = palette["car"]
        data["images"].append((f"p{i}.png", encode(photo(i), "PNG")))
        data["masks"].append((f"p{i}.png", encode(colours)))
    spec = {"classes": ["bike"], "mask_format": "palette", "palette": palette, "also_labelled": ["car"]}
    r = post_task(client, admin, spec, archive=as_zip(data))
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["classes"] == {"bike": 2} and task["also_labelled"] == ["car"]
    with open_store(prepared).open(f"models/{model_id(prepared)}/datasets/{task['id']}/masks/p0.png") as f:
        local = np.asarray(Image.open(io.BytesIO(f.read())))
    assert local[2, 0] == 1 and local[6, 0] == 2 and local[0, 0] == 0  # bike = 1st new, car = n + 1
    assert queued_messages(prepared) == 2


def test_list_and_read_tasks(client, admin, reader):
    first = post_task(client, admin, {"classes": ["a"]}, dataset(2, 1)).json()
    second = post_task(client, admin, {"classes": ["b"]}, dataset(2, 1)).json()
    create_model(client, admin, "other")
    other = post_task(client, admin, {"classes": ["a"]}, dataset(2, 1), model="other").json()
    assert [t["id"] for t in client.get("/tasks", headers=reader).json()] == [other["id"], second["id"], first["id"]]
    assert [t["id"] for t in client.get("/models/m/tasks", headers=reader).json()] == [second["id"], first["id"]]
    assert [t["id"] for t in client.get("/models/other/tasks", headers=reader).json()] == [other["id"]]
    assert client.get("/tasks?status=cancelled", headers=reader).json() == []
    assert client.get("/models/m/tasks?status=cancelled", headers=reader).json() == []
    assert len(client.get("/tasks?status=queued&limit=1", headers=reader).json()) == 1
    assert len(client.get("/models/m/tasks?status=queued&limit=1", headers=reader).json()) == 1
    r = client.get("/tasks?status=done", headers=reader)
    assert r.status_code == 422 and "queued" in r.text
    r = client.get("/tasks/nope", headers=reader)
    assert r.status_code == 404 and r.json() == {"detail": "no task with id 'nope'"}
    r = client.get("/models/nope/tasks", headers=reader)
    assert r.status_code == 404 and "no model named 'nope'" in r.json()["detail"]


def test_idempotency_key(client, prepared, admin):
    files, headers = dataset(3, 1), {**admin, "Idempotency-Key": "upload-42"}
    first = post_task(client, headers, {"classes": ["cat"]}, files)
    again = post_task(client, headers, {"classes": ["cat"]}, files)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = post_task(client, headers, {"classes": ["dog"]}, files)
    assert other.status_code == 422 and "Idempotency-Key 'upload-42' was already used" in other.json()["detail"]
    # Keys are per model: the same key on another model is that model's own first request (and says
    # nothing about the first model's tasks).
    create_model(client, admin, "other")
    elsewhere = post_task(client, headers, {"classes": ["cat"]}, files, model="other")
    assert elsewhere.status_code == 202, elsewhere.text
    assert elsewhere.json()["id"] != first.json()["id"] and "idempotent-replayed" not in elsewhere.headers
    assert [t["id"] for t in client.get("/models/other/tasks", headers=admin).json()] == [elsewhere.json()["id"]]
    replayed = post_task(client, headers, {"classes": ["cat"]}, files, model="other")
    assert replayed.json()["id"] == elsewhere.json()["id"] and replayed.headers["idempotent-replayed"] == "true"
    assert leftovers(prepared) == {"tasks": 2, "dataset_items": 6, "classes": 4, "objects": 12, "messages": 2}


def test_auth_scopes(client, prepared, admin, reader):
    files = dataset(2, 1)
    assert post_task(client, {}, {"classes": ["a"]}, files).status_code == 401
    assert post_task(client, reader, {"classes": ["a"]}, files).status_code == 403
    read_only = bearer(prepared, "read")
    assert post_task(client, read_only, {"classes": ["a"]}, files).status_code == 403
    assert client.get("/tasks").status_code == 401
    assert client.get("/models/m/tasks").status_code == 401
    assert client.get("/tasks", headers=reader).status_code == 200
    assert client.get("/models/m/tasks", headers=read_only).status_code == 200
    task = post_task(client, admin, {"classes": ["a"]}, files).json()
    assert client.get(f"/tasks/{task['id']}", headers=read_only).status_code == 200
    assert client.post(f"/tasks/{task['id']}/cancel", headers=reader).status_code == 403
    assert client.post(f"/tasks/{task['id']}/cancel", headers=read_only).status_code == 403
    assert leftovers(prepared)["tasks"] == 1


def test_a_key_limited_to_some_models_sees_and_changes_only_theirs(client, prepared, admin):
    create_model(client, admin, "other")
    mine = post_task(client, admin, {"classes": ["a"]}, dataset(2, 1)).json()
    theirs = post_task(client, admin, {"classes": ["a"]}, dataset(2, 1), model="other").json()
    m_admin = bearer(prepared, "admin", models=["m"])
    m_reader = bearer(prepared, "read", models=["m"])
    # Listing across models shows the key's models only.
    assert [t["id"] for t in client.get("/tasks", headers=m_reader).json()] == [mine["id"]]
    assert [t["id"] for t in client.get("/tasks", headers=m_admin).json()] == [mine["id"]]
    assert client.get(f"/tasks/{mine['id']}", headers=m_reader).status_code == 200
    # Another model's routes and tasks: 403, naming the model.
    r = client.get(f"/tasks/{theirs['id']}", headers=m_reader)
    assert r.status_code == 403 and "'other'" in r.json()["detail"]
    assert client.get("/models/other/tasks", headers=m_reader).status_code == 403
    r = post_task(client, m_admin, {"classes": ["b"]}, dataset(2, 1), model="other")
    assert r.status_code == 403 and "'other'" in r.json()["detail"]
    r = client.post(f"/tasks/{theirs['id']}/cancel", headers=m_admin)
    assert r.status_code == 403
    assert client.get(f"/tasks/{theirs['id']}", headers=admin).json()["status"] == "queued"
    # Its own model: registering and cancelling work.
    r = post_task(client, m_admin, {"classes": ["b"]}, dataset(2, 1))
    assert r.status_code == 202, r.text
    assert client.post(f"/tasks/{r.json()['id']}/cancel", headers=m_admin).status_code == 200
    assert leftovers(prepared)["tasks"] == 3


def test_openapi_documents_the_upload(client):
    doc = client.get("/openapi.json").json()
    assert "/tasks" not in doc["paths"] or "post" not in doc["paths"]["/tasks"]  # the old route is gone
    body = doc["paths"]["/models/{name}/tasks"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["properties"]) == {"spec", "images", "masks", "archive"}
    spec = body["properties"]["spec"]["contentSchema"]["properties"]
    assert "classes" in spec and "architecture" in spec and "model" not in spec


# --- cancelling ----------------------------------------------------------------------------------
def test_cancel_a_queued_task_releases_its_names_and_indices(client, prepared, admin, reader):
    task = post_task(client, admin, {"classes": ["cat", "dog"]}, dataset(3, 2)).json()
    r = client.post(f"/tasks/{task['id']}/cancel", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] is not None
    assert client.get(f"/tasks/{task['id']}", headers=reader).json()["status"] == "cancelled"
    again = post_task(client, admin, {"classes": ["dog"]}, dataset(2, 1))
    assert again.status_code == 202 and again.json()["classes"] == {"dog": 1}  # no version ever used 1
    # Another model's indices are its own: its first classes are 1 and 2.
    create_model(client, admin, "other")
    fresh = post_task(client, admin, {"classes": ["cat", "dog"]}, dataset(2, 2), model="other")
    assert fresh.status_code == 202 and fresh.json()["classes"] == {"cat": 1, "dog": 2}
    r = client.post(f"/tasks/{task['id']}/cancel", headers=admin)
    assert r.status_code == 409 and "already cancelled" in r.json()["detail"]
    assert client.post("/tasks/nope/cancel", headers=admin).status_code == 404


def test_cancel_a_running_task_asks_the_worker(client, prepared, admin):
    task = post_task(client, admin, {"classes": ["cat"]}, dataset(2, 1)).json()
    with session_scope(make_session_factory(make_engine(prepared))) as s:  # as a worker's claim does
        s.get(Task, task["id"]).status = TaskStatus.RUNNING.value
    r = client.post(f"/tasks/{task['id']}/cancel", headers=admin)
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert client.post(f"/tasks/{task['id']}/cancel", headers=admin).status_code == 202  # asking twice is fine


def test_spec_may_come_as_a_file_part(client, admin):
    parts = [("spec", ("spec.json", json.dumps({"classes": ["cat"]}).encode(), "application/json")),
             *as_files(dataset(2, 1))]
    r = client.post("/models/m/tasks", files=parts, headers=admin)  # what `curl -F spec=@spec.json` sends
    assert r.status_code == 202, r.text
    assert r.json()["classes"] == {"cat": 1}


def test_progress_as_the_worker_reports_it(client, prepared, admin, reader):
    task = post_task(client, admin, {"classes": ["cat"], "batch_size": 4}, dataset(2, 1)).json()
    with session_scope(make_session_factory(make_engine(prepared))) as s:
        row = s.get(Task, task["id"])
        row.status = TaskStatus.RUNNING.value
        row.progress = {"epoch": 1, "epochs": 2, "step": 3, "steps": 5, "loss": 1.25, "lr": 0.01,
                        "images_per_s": 2.0, "updated_at": "2030-05-01T12:00:00+00:00",
                        "history": [[0.2, 2.5], [0.6, 1.25]]}
    progress = client.get(f"/tasks/{task['id']}", headers=reader).json()["progress"]
    # 2 steps left in epoch 1 and 5 in epoch 2, 4 images each, at 2 images/s
    assert progress == {"epoch": 1, "epochs": 2, "step": 3, "steps": 5, "loss": 1.25, "images_per_s": 2.0,
                        "eta_s": 14.0, "resumed_from_epoch": None, "updated_at": "2030-05-01T12:00:00Z",
                        "history": [[0.2, 2.5], [0.6, 1.25]]}
    with session_scope(make_session_factory(make_engine(prepared))) as s:  # finished: the curve stays
        s.get(Task, task["id"]).status = TaskStatus.SUCCEEDED.value
    progress = client.get(f"/tasks/{task['id']}", headers=reader).json()["progress"]
    assert progress["history"] == [[0.2, 2.5], [0.6, 1.25]] and progress["eta_s"] is None


# --- several models ------------------------------------------------------------------------------
def test_two_models_hold_the_same_class_names_with_their_own_indices(client, prepared, admin, reader):
    create_model(client, admin, "other")
    a = post_task(client, admin, {"classes": ["car", "person"]}, dataset(2, 2))
    b = post_task(client, admin, {"classes": ["person", "car"], "architecture": "fcn_resnet50"},
                  dataset(2, 2), model="other")
    assert a.status_code == b.status_code == 202, (a.text, b.text)
    assert (a.json()["model"], a.json()["classes"]) == ("m", {"car": 1, "person": 2})
    assert (b.json()["model"], b.json()["classes"]) == ("other", {"person": 1, "car": 2})
    assert (a.json()["architecture"], b.json()["architecture"]) == ("lraspp_mobilenet_v3_large", "fcn_resnet50")
    classes = {name: {c["name"]: c["index"] for c in client.get(f"/models/{name}/classes", headers=reader).json()}
               for name in ("m", "other")}
    assert classes == {"m": {"background": 0, "car": 1, "person": 2},
                       "other": {"background": 0, "person": 1, "car": 2}}
    # Each model's objects live under its own prefix.
    for name, task in (("m", a.json()), ("other", b.json())):
        keys = [o.key for o in open_store(prepared).list(f"models/{model_id(prepared, name)}/")]
        assert len(keys) == 4 and all(f"/datasets/{task['id']}/" in k for k in keys)


def test_tasks_of_a_model_that_does_not_exist_are_refused(client, prepared, admin):
    r = post_task(client, admin, {"classes": ["cat"]}, dataset(2, 1), model="nope")
    assert r.status_code == 404 and "no model named 'nope'" in r.json()["detail"]
    r = post_task(client, admin, {"classes": ["cat"]}, dataset(2, 1), model="-not-a-name")
    assert r.status_code == 422 and "path.name" in r.json()["detail"]
    assert leftovers(prepared) == {"tasks": 0, "dataset_items": 0, "classes": 0, "objects": 0, "messages": 0}
