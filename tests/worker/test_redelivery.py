"""A worker killed mid-training (SIGKILL: no clean shutdown) loses nothing: a new worker picks the
task up again, resumes from the last epoch checkpoint (copied to the object store, so this works
across machines) and produces exactly one version."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from services.cli.processes import worker_command
from services.config import settings_env
from tests.worker.test_training_flow import SMALL, create_model, model_ids, shapes_zip, submit, wait_task

ROOT = Path(__file__).resolve().parents[2]


def start_worker(settings, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(worker_command(settings), env={**os.environ, **settings_env(settings)},
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int) -> None:
    """Signal the whole group (the Celery parent and its pool child); SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_killed_worker_task_resumes_and_yields_one_version(client, prepared, admin_headers, tmp_path):
    h = admin_headers
    log = tmp_path / "workers.log"
    create_model(client, h, "shapes")
    task = submit(client, h, {**SMALL, "classes": ["square", "disc"], "epochs": 6},
                  shapes_zip(tmp_path, [1, 2], 16, seed=4), model="shapes")
    first = start_worker(prepared, log)
    try:
        # Wait until at least one epoch is checkpointed, then kill the worker without warning.
        wait_task(client, h, task["id"], until=("running",), timeout_s=120)
        store = client.app.state.strata.store
        state_key = f"models/{model_ids(client)['shapes']}/training/{task['id']}/last.pt"
        for _ in range(600):
            if store.exists(state_key) or client.get(f"/tasks/{task['id']}", headers=h).json()["status"] != "running":
                break
            time.sleep(0.2)
        assert store.exists(state_key), log.read_text()
    finally:
        stop(first, signal.SIGKILL)
    assert client.get(f"/tasks/{task['id']}", headers=h).json()["status"] == "running"
    # As if the next worker ran on another machine: no local copy, only the one in the object store.
    shutil.rmtree(prepared.cache_dir / "train" / task["id"])

    second = start_worker(prepared, log)
    try:
        done = wait_task(client, h, task["id"], timeout_s=300)
        # The worker removes the stored epoch checkpoint right after recording the version.
        deadline = time.monotonic() + 30
        while store.exists(state_key) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop(second, signal.SIGTERM)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    assert done["attempts"] == 2 and done["progress"]["resumed_from_epoch"] >= 1
    # One loss curve over both attempts: the first one's points up to the resumed epoch, then the second's.
    xs = [x for x, _ in done["progress"]["history"]]
    assert xs == sorted(set(xs)) and xs[0] <= done["progress"]["resumed_from_epoch"] and xs[-1] == 6
    versions = client.get("/models/shapes/versions", headers=h).json()
    assert [v["version"] for v in versions] == [1] and versions[0]["task_id"] == task["id"]
    assert client.get("/models/shapes/versions/production", headers=h).json()["task_id"] == task["id"]
    assert not store.exists(state_key), "the epoch checkpoint outlived the task"
