"""Two models trained side by side by two real worker processes (embedded defaults and Postgres +
Redis + the S3 endpoint): the two models' steps overlap in time, each model's own steps never do
and each starts from its own parent; both models then serve their own versions with the same class
names at different indices, and promoting or rolling back one leaves the other alone."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.cli.processes import worker_command
from services.config import settings_env
from tests.worker.test_training_flow import SMALL, create_model, segment, shapes_zip, submit, wait_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_workers(prepared):
    """Two Celery worker processes on the same broker and queue (distinct node names)."""
    procs, logs = [], []
    # One CPU thread each: two torch processes with a thread per core each would crowd 2 CI cores.
    env = {**os.environ, **settings_env(prepared.model_copy(update={"worker_threads": 1}))}
    for i in range(2):
        command = [arg.replace("strata-training@", f"strata-training-{i}@") for arg in worker_command(prepared)]
        log = prepared.data_dir / f"worker-{i}.log"
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                          start_new_session=True))
        logs.append(log)
    yield procs
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for log in logs:
        print(log.read_text(errors="replace")[-3000:])  # shown by pytest only when a test fails


def overlap(a: dict, b: dict) -> bool:
    return a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


def segment_mask(client, headers, model: str, version: str | None = None, *, expect: int | None = None,
                 timeout_s: float = 60) -> tuple[dict, np.ndarray]:
    """Segment once; with ``expect``, until that version answers (a promotion swaps the served model
    once the new version is loaded: until then the previous one answers, without downtime)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = segment(client, headers, model, version)
        assert r.status_code == 200, r.text
        body = r.json()
        if expect is None or body["model_version"] == expect or time.monotonic() > deadline:
            return body, np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
        time.sleep(0.2)


def test_two_models_train_in_parallel_and_serve_apart(client, two_workers, admin_headers, infer_headers, tmp_path):
    h = admin_headers
    for name in ("north", "south"):
        create_model(client, h, name)
    first = {**SMALL, "epochs": 3}
    # The same class names in both models, listed in a different order: different indices.
    a1 = submit(client, h, {**first, "classes": ["square", "disc"]}, shapes_zip(tmp_path, [1, 2], 16, seed=1),
                model="north")
    b1 = submit(client, h, {**first, "classes": ["disc", "square"]}, shapes_zip(tmp_path, [2, 1], 16, seed=2),
                model="south")
    second = {"classes": ["triangle"], "method": "ld", "epochs": 2, "image_size": 32, "batch_size": 4,
              "val_fraction": 0.25, "hyperparameters": {"lr": 0.02, "seed": 0}}
    a2 = submit(client, h, second, shapes_zip(tmp_path, [3], 12, seed=3), model="north")
    b2 = submit(client, h, second, shapes_zip(tmp_path, [3], 12, seed=4), model="south")
    assert a1["classes"] == {"square": 1, "disc": 2} and b1["classes"] == {"disc": 1, "square": 2}

    done = {t["id"]: wait_task(client, h, t["id"], timeout_s=600) for t in (a1, b1, a2, b2)}
    assert all(t["status"] == "succeeded" for t in done.values()), done
    a1, b1, a2, b2 = (done[t["id"]] for t in (a1, b1, a2, b2))
    assert overlap(a1, b1), "the two models' first steps did not run at the same time"
    assert not overlap(a1, a2) and a2["started_at"] >= a1["finished_at"], "one model's steps overlapped"
    assert not overlap(b1, b2) and b2["started_at"] >= b1["finished_at"], "one model's steps overlapped"
    for t in (a1, b1):
        assert (t["model_version"], t["parent_version"]) == (1, None)
    for t in (a2, b2):
        assert (t["model_version"], t["parent_version"]) == (2, 1)

    # Each model's versions, classes and aliases are its own.
    for name, indices in (("north", {"square": 1, "disc": 2, "triangle": 3}),
                          ("south", {"disc": 1, "square": 2, "triangle": 3})):
        versions = client.get(f"/models/{name}/versions", headers=h).json()
        assert [(v["model"], v["version"], v["parent"]) for v in versions] == [(name, 1, None), (name, 2, 1)]
        classes = client.get(f"/models/{name}/classes", headers=h).json()
        assert {c["name"]: c["index"] for c in classes if c["index"]} == indices
        v2 = client.get(f"/models/{name}/versions/2", headers=h).json()
        assert set(v2["iou"]) == {"background", "square", "disc", "triangle"} and v2["lineage"] == [1, 2]
    north = {c["name"]: c["hex"] for c in client.get("/models/north/classes", headers=h).json()}
    south = {c["name"]: c["hex"] for c in client.get("/models/south/classes", headers=h).json()}
    assert north["square"] != south["square"]  # colours follow each model's own indices

    # Serving, promotion and rollback per model: moving north's production leaves south's alone.
    for name in ("north", "south"):
        assert client.put(f"/models/{name}/aliases/production", json={"version": 2}, headers=h).status_code == 200
    assert client.put("/models/north/aliases/production", json={"version": 1}, headers=h).json() == {
        "alias": "production", "version": 1, "previous": 2}
    assert client.get("/models/north/versions/production", headers=h).json()["version"] == 1
    assert client.get("/models/south/versions/production", headers=h).json()["version"] == 2
    body, mask = segment_mask(client, infer_headers, "north", expect=1)
    assert (body["model"], body["model_version"]) == ("north", 1) and set(np.unique(mask)) <= {0, 1, 2}
    body, mask = segment_mask(client, infer_headers, "south", expect=2)
    assert (body["model"], body["model_version"]) == ("south", 2) and set(np.unique(mask)) <= {0, 1, 2, 3}
    body, _ = segment_mask(client, infer_headers, "north", version="latest")
    assert (body["model"], body["model_version"]) == ("north", 2)
    # Tasks list per model, and the global queue holds both.
    assert {t["id"] for t in client.get("/models/north/tasks", headers=h).json()} == {a1["id"], a2["id"]}
    assert {t["model"] for t in client.get("/tasks", headers=h).json()} == {"north", "south"}
