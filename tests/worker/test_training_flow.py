"""The product end to end, with a real Celery worker process: a base task with two classes, its
version and metrics, /segment on it, a second task adding a class (version 2, parent 1, metrics
for every class), promotion and rollback, and cancelling a running task. Runs on the embedded
defaults and on Postgres + Redis + the S3 endpoint.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from services.data.synthetic import write_shapes_dataset
from services.learning.config import TrainConfig

SMALL = {"model": "lraspp_mobilenet_v3_large", "image_size": 32, "batch_size": 4, "val_fraction": 0.25,
         "hyperparameters": {"lr": 0.05, "seed": 0, "pretrained_backbone": False}}


def shapes_zip(tmp: Path, classes: list[int], count: int, seed: int) -> bytes:
    """A zip of images/ + masks/ whose masks label only ``classes``, renumbered 1.. (local form)."""
    root = write_shapes_dataset(tmp / f"shapes-{seed}", {"train": count}, size=32, num_shapes=3,
                                compositions={"train": [classes]}, seed=seed)
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


def submit(client, headers, spec: dict, archive: bytes) -> dict:
    r = client.post("/tasks", headers=headers, data={"spec": json.dumps(spec)},
                    files={"archive": ("data.zip", archive, "application/zip")})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/tasks/{r.json()['id']}"
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


def test_two_steps_promotion_rollback_and_cancel(client, worker_process, admin_headers, infer_headers, tmp_path):
    h = admin_headers
    # --- step 0: the base model learns square and disc --------------------------------------
    # The lineage's method and its loss weight are given now; the base model itself trains with
    # plain cross-entropy (there is nothing to distil from yet) and must not trip over them.
    first = submit(client, h, {**SMALL, "classes": ["square", "disc"], "epochs": 3, "method": "ld",
                               "hyperparameters": {**SMALL["hyperparameters"], "lambda_d": 2.0}},
                   shapes_zip(tmp_path, [1, 2], 16, seed=1))
    done = wait_task(client, h, first["id"])
    assert done["status"] == "succeeded", done
    assert done["model_version"] == 1 and done["progress"]["epoch"] == 3

    v1 = client.get("/models/1", headers=h).json()
    assert v1["parent"] is None and v1["task_id"] == first["id"]
    assert set(v1["iou"]) == {"background", "square", "disc"}
    assert all(0 <= v <= 1 for v in v1["iou"].values() if v is not None)
    assert "production" in v1["aliases"]
    assert len(v1["checkpoint"]["sha256"]) == 64 and v1["checkpoint"]["key"].startswith("checkpoints/1/model-")

    r = client.post("/segment", headers=infer_headers, files={"image": ("x.png", png_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    seg = r.json()
    assert seg["model_version"] == 1 and (seg["width"], seg["height"]) == (48, 40)
    mask = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(seg["mask_png"]))))
    assert mask.shape == (40, 48) and set(np.unique(mask)) <= {0, 1, 2}

    # --- step 1: a third class, distilled from version 1 ------------------------------------
    second = submit(client, h, {"classes": ["triangle"], "method": "ld", "epochs": 2, "image_size": 32,
                                "batch_size": 4, "val_fraction": 0.25,
                                "hyperparameters": {"lr": 0.02, "seed": 0}},
                    shapes_zip(tmp_path, [3], 12, seed=2))
    done = wait_task(client, h, second["id"])
    assert done["status"] == "succeeded", done
    v2 = client.get(f"/models/{done['model_version']}", headers=h).json()
    assert v2["version"] == 2 and v2["parent"] == 1 and v2["method"] == "ld"
    # The version states the settings it was trained with, the engine's defaults included.
    assert v2["hyperparameters"]["lr"] == 0.02 and v2["hyperparameters"]["epochs"] == 2
    assert (v2["hyperparameters"]["batchnorm"], v2["hyperparameters"]["class_balance"]) == (
        TrainConfig.batchnorm, TrainConfig.class_balance)
    assert set(v2["iou"]) == {"background", "square", "disc", "triangle"}
    assert set(v2["forgetting"]) >= {"square", "disc"}
    classes = {c["name"]: c for c in client.get("/classes", headers=h).json()}
    assert classes["triangle"]["task_id"] == second["id"] and classes["square"]["task_id"] == first["id"]

    # --- promotion and rollback -------------------------------------------------------------
    assert client.post("/models/2/promote", headers=h).status_code == 200
    assert client.get("/models/production", headers=h).json()["version"] == 2
    assert client.post("/models/1/promote", headers=h).status_code == 200  # rollback
    assert client.get("/models/production", headers=h).json()["version"] == 1
    r = client.post("/segment?version=2", headers=infer_headers, files={"image": ("x.png", png_bytes(), "image/png")})
    assert r.status_code == 200 and r.json()["model_version"] == 2

    # --- cancel a running task ----------------------------------------------------------------
    third = submit(client, h, {"classes": ["bar"], "method": "ft", "epochs": 500, "image_size": 32,
                               "batch_size": 4, "val_fraction": 0.25}, shapes_zip(tmp_path, [3], 8, seed=3))
    wait_task(client, h, third["id"], until=("running",), timeout_s=120)
    r = client.post(f"/tasks/{third['id']}/cancel", headers=h)
    assert r.status_code == 202, r.text
    done = wait_task(client, h, third["id"], timeout_s=120)
    assert done["status"] == "cancelled" and done["model_version"] is None
    assert "bar" not in {c["name"] for c in client.get("/classes", headers=h).json()}
    assert [m["version"] for m in client.get("/models", headers=h).json()] in ([1, 2], [2, 1])
