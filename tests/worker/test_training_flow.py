"""The product end to end, with a real Celery worker process, per model: a model is created, its
base task with two classes gives version 1 with its metrics, /models/{name}/segment serves it, a
second task adds a class (version 2, parent 1, metrics for every class), production is promoted
and rolled back through PUT /models/{name}/aliases/production, and a running task is cancelled.
Alongside, a second model with the same class names in another order trains its own version 1:
its own indices, colours, versions, aliases and answers. Runs on the embedded defaults and on
Postgres + Redis + the S3 endpoint.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from services.data.synthetic import write_shapes_dataset
from services.db.models import Model
from services.learning.config import TrainConfig

SMALL = {"architecture": "lraspp_mobilenet_v3_large", "image_size": 32, "batch_size": 4, "val_fraction": 0.25,
         "hyperparameters": {"lr": 0.05, "seed": 0, "pretrained_backbone": False}}


def shapes_zip(tmp: Path, classes: list[int], count: int, seed: int, shown: list[int] | None = None) -> bytes:
    """A zip of images/ + masks/ whose masks label only ``classes``, renumbered 1.. (local form).

    ``shown``: the shapes every image draws (default: ``classes``); those not in ``classes`` are
    labelled background, as MiB's protocol has old classes in a new step's images."""
    name = f"shapes-{seed}" if shown is None else f"shapes-{seed}-{'-'.join(map(str, shown))}"
    root = write_shapes_dataset(tmp / name, {"train": count}, size=32, num_shapes=3,
                                compositions={"train": [shown or classes]}, seed=seed)
    lut = np.zeros(256, dtype=np.uint8)
    lut[255] = 255
    for local, c in enumerate(classes, start=1):
        lut[c] = local
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for image in sorted((root / "train" / "images").iterdir()):
            zf.write(image, f"images/{image.name}")
            mask = lut[np.asarray(Image.open(root / "train" / "masks" / image.name))]
            out = io.BytesIO()
            Image.fromarray(mask).save(out, format="PNG")
            zf.writestr(f"masks/{image.name}", out.getvalue())
    return buf.getvalue()


def create_model(client, headers, name: str) -> None:
    r = client.post("/models", json={"name": name, "description": f"the {name} test model"}, headers=headers)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/models/{name}"


def submit(client, headers, spec: dict, archive: bytes, *, model: str) -> dict:
    r = client.post(f"/models/{model}/tasks", headers=headers, data={"spec": json.dumps(spec)},
                    files={"archive": ("data.zip", archive, "application/zip")})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/tasks/{r.json()['id']}"
    assert r.json()["model"] == model
    return r.json()


def wait_task(client, headers, task_id: str, until=("succeeded", "failed", "cancelled"), timeout_s=300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = client.get(f"/tasks/{task_id}", headers=headers).json()
        if task["status"] in until:
            return task
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} still {task['status']} after {timeout_s}s: {task}")


def png_bytes(size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def segment(client, headers, model: str, version: str | None = None, **kw):
    query = f"?version={version}" if version is not None else ""
    return client.post(f"/models/{model}/segment{query}", headers=headers,
                       files={"image": ("x.png", png_bytes(), "image/png")}, **kw)


def model_ids(client) -> dict[str, int]:
    with client.app.state.strata.sessions() as s:
        return dict(s.execute(select(Model.name, Model.id)).all())


def production_gauge(client) -> dict[str, float]:
    """strata_production_version by model, from one /metrics scrape."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {sample.labels["model"]: sample.value for family in families if family.name == "strata_production_version"
            for sample in family.samples}


def test_two_steps_promotion_rollback_and_cancel(client, worker_process, admin_headers, infer_headers, tmp_path):
    h = admin_headers
    create_model(client, h, "shapes")
    create_model(client, h, "other")
    # --- step 0: the base model learns square and disc --------------------------------------
    # The lineage's method and its loss weight are given now; the base model itself trains with
    # plain cross-entropy (there is nothing to distil from yet) and must not trip over them.
    first = submit(client, h, {**SMALL, "classes": ["square", "disc"], "epochs": 3, "method": "ld",
                               "hyperparameters": {**SMALL["hyperparameters"], "lambda_d": 2.0}},
                   shapes_zip(tmp_path, [1, 2], 16, seed=1), model="shapes")
    # Another model's first task, the same names in the other order: it does not queue behind
    # the first model's task and starts from nothing of it.
    other = submit(client, h, {**SMALL, "classes": ["disc", "square"], "epochs": 1},
                   shapes_zip(tmp_path, [2, 1], 8, seed=5), model="other")
    assert other["classes"] == {"disc": 1, "square": 2} and other["parent_version"] is None
    done = wait_task(client, h, first["id"])
    assert done["status"] == "succeeded", done
    assert done["model_version"] == 1 and done["progress"]["epoch"] == 3
    xs = [x for x, _ in done["progress"]["history"]]  # the loss curve stays with the finished task
    assert xs and xs == sorted(set(xs)) and xs[-1] == 3
    timings = done["timings"]  # where the time went, phase by phase
    assert timings["attempt"] == 1 and timings["ingest_s"] > 0 and timings["queued_s"] >= 0
    phases = ("fetch_s", "train_s", "score_s", "upload_s", "record_s")
    assert all(timings[p] >= 0 for p in phases) and timings["train_s"] > timings["upload_s"]
    assert timings["total_s"] >= sum(timings[p] for p in phases)

    v1 = client.get("/models/shapes/versions/1", headers=h).json()
    assert v1["model"] == "shapes" and v1["parent"] is None and v1["task_id"] == first["id"]
    assert set(v1["iou"]) == {"background", "square", "disc"}
    assert all(0 <= v <= 1 for v in v1["iou"].values() if v is not None)
    assert "production" in v1["aliases"] and "latest" in v1["aliases"]
    ids = model_ids(client)
    assert len(v1["checkpoint"]["sha256"]) == 64
    assert v1["checkpoint"]["key"].startswith(f"models/{ids['shapes']}/checkpoints/1/model-")

    r = segment(client, infer_headers, "shapes")
    assert r.status_code == 200, r.text
    seg = r.json()
    assert (seg["model"], seg["model_version"]) == ("shapes", 1) and (seg["width"], seg["height"]) == (48, 40)
    mask = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(seg["mask_png"]))))
    assert mask.shape == (40, 48) and set(np.unique(mask)) <= {0, 1, 2}
    assert set(seg["classes"]) <= {"background", "square", "disc"}

    # --- the other model: its own version 1, indices and colours ------------------------------
    done = wait_task(client, h, other["id"])
    assert done["status"] == "succeeded", done
    assert done["model_version"] == 1 and done["parent_version"] is None
    o1 = client.get("/models/other/versions/production", headers=h).json()
    assert (o1["model"], o1["version"], o1["task_id"], o1["parent"]) == ("other", 1, other["id"], None)
    assert o1["checkpoint"]["key"].startswith(f"models/{ids['other']}/checkpoints/1/model-")
    assert [c["index"] for c in o1["classes"] if c["name"] == "disc"] == [1]
    legend = {m: {c["name"]: c for c in client.get(f"/models/{m}/classes", headers=h).json()}
              for m in ("shapes", "other")}
    assert (legend["shapes"]["square"]["index"], legend["shapes"]["disc"]["index"]) == (1, 2)
    assert (legend["other"]["disc"]["index"], legend["other"]["square"]["index"]) == (1, 2)
    assert legend["shapes"]["square"]["color"] != legend["other"]["square"]["color"]
    assert legend["other"]["disc"]["task_id"] == other["id"]
    r = segment(client, infer_headers, "other")
    assert r.status_code == 200 and (r.json()["model"], r.json()["model_version"]) == ("other", 1)
    assert set(r.json()["classes"]) <= {"background", "disc", "square"}

    # --- step 1: a third class, distilled from version 1 ------------------------------------
    second = submit(client, h, {"classes": ["triangle"], "method": "ld", "epochs": 2, "image_size": 32,
                                "batch_size": 4, "val_fraction": 0.25,
                                "hyperparameters": {"lr": 0.02, "seed": 0}},
                    shapes_zip(tmp_path, [3], 12, seed=2), model="shapes")
    assert second["parent_version"] == 1 and second["architecture"] == "lraspp_mobilenet_v3_large"
    done = wait_task(client, h, second["id"])
    assert done["status"] == "succeeded", done
    v2 = client.get(f"/models/shapes/versions/{done['model_version']}", headers=h).json()
    assert v2["version"] == 2 and v2["parent"] == 1 and v2["method"] == "ld" and v2["lineage"] == [1, 2]
    # The version states the settings it was trained with, the engine's defaults included.
    assert v2["hyperparameters"]["lr"] == 0.02 and v2["hyperparameters"]["epochs"] == 2
    assert (v2["hyperparameters"]["batchnorm"], v2["hyperparameters"]["class_balance"]) == (
        TrainConfig.batchnorm, TrainConfig.class_balance)
    assert set(v2["iou"]) == {"background", "square", "disc", "triangle"}
    assert set(v2["forgetting"]) >= {"square", "disc"}
    classes = {c["name"]: c for c in client.get("/models/shapes/classes", headers=h).json()}
    assert classes["triangle"]["task_id"] == second["id"] and classes["square"]["task_id"] == first["id"]
    assert classes["triangle"]["index"] == 3
    assert [c["name"] for c in client.get("/models/shapes/classes?version=1", headers=h).json()] == [
        "background", "square", "disc"]
    assert "triangle" not in {c["name"] for c in client.get("/models/other/classes", headers=h).json()}

    # --- promotion and rollback -------------------------------------------------------------
    r = client.put("/models/shapes/aliases/production", json={"version": 2}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["alias"], r.json()["version"]) == ("production", 2)
    assert client.get("/models/shapes/versions/production", headers=h).json()["version"] == 2
    r = client.put("/models/shapes/aliases/production", json={"version": 1}, headers=h)  # rollback
    assert r.status_code == 200 and r.json() == {"alias": "production", "version": 1, "previous": 2}
    assert client.get("/models/shapes/versions/production", headers=h).json()["version"] == 1
    assert client.put("/models/shapes/aliases/latest", json={"version": 1}, headers=h).status_code == 409
    aliases = {a["name"]: a["version"] for a in client.get("/models/shapes/aliases", headers=h).json()}
    assert aliases == {"production": 1, "latest": 2}
    r = segment(client, infer_headers, "shapes", version="2")
    assert r.status_code == 200 and (r.json()["model"], r.json()["model_version"]) == ("shapes", 2)
    r = segment(client, {**infer_headers, "Accept": "image/png"}, "shapes")  # production: version 1 again
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert (r.headers["x-model"], r.headers["x-model-version"]) == ("shapes", "1")
    # The other model's aliases, versions and answers are untouched by all of this.
    assert {a["name"]: a["version"] for a in client.get("/models/other/aliases", headers=h).json()} == {
        "production": 1, "latest": 1}
    assert client.get("/models/other/versions/2", headers=h).status_code == 404
    assert client.put("/models/other/aliases/production", json={"version": 2}, headers=h).status_code == 404
    assert segment(client, infer_headers, "other").json()["model_version"] == 1
    assert production_gauge(client) == {"shapes": 1.0, "other": 1.0}

    # --- cancel a running task ----------------------------------------------------------------
    third = submit(client, h, {"classes": ["bar"], "method": "ft", "epochs": 500, "image_size": 32,
                               "batch_size": 4, "val_fraction": 0.25}, shapes_zip(tmp_path, [3], 8, seed=3),
                   model="shapes")
    wait_task(client, h, third["id"], until=("running",), timeout_s=120)
    r = client.post(f"/tasks/{third['id']}/cancel", headers=h)
    assert r.status_code == 202, r.text
    done = wait_task(client, h, third["id"], timeout_s=120)
    assert done["status"] == "cancelled" and done["model_version"] is None
    assert "bar" not in {c["name"] for c in client.get("/models/shapes/classes", headers=h).json()}
    assert [m["version"] for m in client.get("/models/shapes/versions", headers=h).json()] in ([1, 2], [2, 1])
    assert [m["version"] for m in client.get("/models/other/versions", headers=h).json()] == [1]
    summary = {m["name"]: m for m in client.get("/models", headers=h).json()}
    assert (summary["shapes"]["production"], summary["shapes"]["latest"], summary["shapes"]["versions"]) == (1, 2, 2)
    assert (summary["other"]["production"], summary["other"]["versions"], summary["other"]["classes"]) == (1, 1, 2)
    assert summary["shapes"]["pending_tasks"] == summary["other"]["pending_tasks"] == 0
