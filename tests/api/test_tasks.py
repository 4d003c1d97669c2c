"""POST /tasks, GET /tasks, GET /tasks/{id}, POST /tasks/{id}/cancel on both backends."""

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
from services.db.models import DatasetItem, SemanticClass, Task, TaskStatus
from services.db.session import make_engine, make_session_factory, session_scope
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


def post_task(client, headers, spec, files=None, archive: bytes | None = None, **kw):
    parts = as_files(files) if files is not None else []
    if archive is not None:
        parts.append(("archive", ("data.zip", archive, "application/zip")))
    data = {"spec": spec if isinstance(spec, str) else json.dumps(spec)}
    return client.post("/tasks", data=data, files=parts, headers=headers, **kw)


def bearer(settings, *scopes: str) -> dict[str, str]:
    with session_scope(make_session_factory(make_engine(settings))) as s:
        _, plaintext = create_key(s, f"test {' '.join(scopes)}", scopes)
    return {"Authorization": f"Bearer {plaintext}"}


def leftovers(settings) -> dict[str, int]:
    """Rows and objects a rejected request must not leave behind."""
    with make_session_factory(make_engine(settings))() as s:
        rows = {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in (Task, DatasetItem, SemanticClass)}
    return {**rows, "objects": len(list(open_store(settings).list("datasets/"))),
            "messages": queued_messages(settings)}


def queued_messages(settings) -> int:
    """Messages waiting on the training queue (nothing consumes them in these tests)."""
    with TaskQueue(settings).app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(settings.training_queue, passive=False).message_count


@pytest.fixture
def admin(prepared):
    return bearer(prepared, "admin")


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
    assert body["method"] == "mib" and body["model"] == "deeplabv3_resnet101"
    assert body["items"] == {"train": 5, "val": 1} and body["progress"] is None
    assert client.get(r.headers["location"], headers=reader).json() == body
    assert queued_messages(prepared) == 1
    keys = [o.key for o in open_store(prepared).list(f"datasets/{body['id']}/")]
    assert len(keys) == 12 and f"datasets/{body['id']}/images/img00.jpg" in keys


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
    with open_store(prepared).open(f"datasets/{task['id']}/masks/p0.png") as f:
        local = np.asarray(Image.open(io.BytesIO(f.read())))
    assert local[2, 0] == 1 and local[6, 0] == 2 and local[0, 0] == 0  # bike = 1st new, car = n + 1
    assert queued_messages(prepared) == 2


def test_list_and_read_tasks(client, admin, reader):
    first = post_task(client, admin, {"classes": ["a"]}, dataset(2, 1)).json()
    second = post_task(client, admin, {"classes": ["b"]}, dataset(2, 1)).json()
    assert [t["id"] for t in client.get("/tasks", headers=reader).json()] == [second["id"], first["id"]]
    assert client.get("/tasks?status=cancelled", headers=reader).json() == []
    assert len(client.get("/tasks?status=queued&limit=1", headers=reader).json()) == 1
    r = client.get("/tasks?status=done", headers=reader)
    assert r.status_code == 422 and "queued" in r.text
    r = client.get("/tasks/nope", headers=reader)
    assert r.status_code == 404 and r.json() == {"detail": "no task with id 'nope'"}


def test_idempotency_key(client, prepared, admin):
    files, headers = dataset(3, 1), {**admin, "Idempotency-Key": "upload-42"}
    first = post_task(client, headers, {"classes": ["cat"]}, files)
    again = post_task(client, headers, {"classes": ["cat"]}, files)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = post_task(client, headers, {"classes": ["dog"]}, files)
    assert other.status_code == 422 and "Idempotency-Key 'upload-42' was already used" in other.json()["detail"]
    assert leftovers(prepared) == {"tasks": 1, "dataset_items": 3, "classes": 2, "objects": 6, "messages": 1}


def test_auth_scopes(client, admin, reader):
    files = dataset(2, 1)
    assert post_task(client, {}, {"classes": ["a"]}, files).status_code == 401
    assert post_task(client, reader, {"classes": ["a"]}, files).status_code == 403
    assert client.get("/tasks").status_code == 401
    assert client.get("/tasks", headers=reader).status_code == 200
    task = post_task(client, admin, {"classes": ["a"]}, files).json()
    assert client.post(f"/tasks/{task['id']}/cancel", headers=reader).status_code == 403


def test_openapi_documents_the_upload(client):
    doc = client.get("/openapi.json").json()
    body = doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["properties"]) == {"spec", "images", "masks", "archive"}
    assert "classes" in body["properties"]["spec"]["contentSchema"]["properties"]


# --- cancelling ----------------------------------------------------------------------------------
def test_cancel_a_queued_task_releases_its_names_not_its_indices(client, prepared, admin, reader):
    task = post_task(client, admin, {"classes": ["cat", "dog"]}, dataset(3, 2)).json()
    r = client.post(f"/tasks/{task['id']}/cancel", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] is not None
    assert client.get(f"/tasks/{task['id']}", headers=reader).json()["status"] == "cancelled"
    again = post_task(client, admin, {"classes": ["dog"]}, dataset(2, 1))
    assert again.status_code == 202 and again.json()["classes"] == {"dog": 3}
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
    r = client.post("/tasks", files=parts, headers=admin)  # what `curl -F spec=@spec.json` sends
    assert r.status_code == 202, r.text
    assert r.json()["classes"] == {"cat": 1}


def test_progress_as_the_worker_reports_it(client, prepared, admin, reader):
    task = post_task(client, admin, {"classes": ["cat"], "batch_size": 4}, dataset(2, 1)).json()
    with session_scope(make_session_factory(make_engine(prepared))) as s:
        row = s.get(Task, task["id"])
        row.status = TaskStatus.RUNNING.value
        row.progress = {"epoch": 1, "epochs": 2, "step": 3, "steps": 5, "loss": 1.25, "lr": 0.01,
                        "images_per_s": 2.0, "updated_at": "2030-05-01T12:00:00+00:00"}
    progress = client.get(f"/tasks/{task['id']}", headers=reader).json()["progress"]
    # 2 steps left in epoch 1 and 5 in epoch 2, 4 images each, at 2 images/s
    assert progress == {"epoch": 1, "epochs": 2, "step": 3, "steps": 5, "loss": 1.25, "images_per_s": 2.0,
                        "eta_s": 14.0, "resumed_from_epoch": None, "updated_at": "2030-05-01T12:00:00Z"}
