"""A worker configured with two processes per task (STRATA_GPUS_PER_TASK=2; gloo on this CPU-only
machine) trains a task to a recorded version, with its progress, through the real Celery pool; a
worker killed mid-task leaves it to the next, which resumes it on two processes again."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.servers import worker_running
from tests.worker.test_redelivery import start_worker, stop
from tests.worker.test_training_flow import SMALL, create_model, model_ids, shapes_zip, submit, wait_task


@pytest.mark.slow
def test_a_worker_trains_one_task_on_two_processes(server_settings, tmp_path: Path) -> None:
    from api.main import create_app
    from services.auth import create_key
    from services.cli.run import prepare
    from services.db.session import session_scope

    settings = server_settings.model_copy(update={"gpus_per_task": 2})
    prepare(settings)
    log = tmp_path / "worker.log"
    with TestClient(create_app(settings)) as client, worker_running(settings, log):
        with session_scope(client.app.state.strata.sessions) as s:
            h = bearer(create_key(s, "test admin", ["admin"])[1])
        create_model(client, h, "shapes")
        task = submit(client, h, {**SMALL, "classes": ["square", "disc"], "epochs": 3},
                      shapes_zip(tmp_path, [1, 2], 16, seed=4), model="shapes")
        done = wait_task(client, h, task["id"], timeout_s=300)
        assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
        assert done["progress"]["epoch"] == 3
        versions = client.get("/models/shapes/versions", headers=h).json()
        assert [v["version"] for v in versions] == [1] and versions[0]["task_id"] == task["id"]
        v1 = client.get("/models/shapes/versions/1", headers=h).json()  # scored on rank 0
        assert set(v1["iou"]) == {"background", "square", "disc"}
    assert "training on 2 processes (gloo), 2 images per process and step" in log.read_text()


@pytest.mark.slow
def test_a_killed_worker_resumes_a_task_on_two_processes(server_settings, tmp_path: Path) -> None:
    # The worker's whole process group is killed (pool child = rank 0, and rank 1) after an epoch
    # checkpoint; a new worker resumes from the stored checkpoint, again on two processes.
    from api.main import create_app
    from services.auth import create_key
    from services.cli.run import prepare
    from services.db.session import session_scope

    settings = server_settings.model_copy(update={"gpus_per_task": 2})
    prepare(settings)
    log = tmp_path / "workers.log"
    with TestClient(create_app(settings)) as client:
        with session_scope(client.app.state.strata.sessions) as s:
            h = bearer(create_key(s, "test admin", ["admin"])[1])
        create_model(client, h, "shapes")
        task = submit(client, h, {**SMALL, "classes": ["square", "disc"], "epochs": 6},
                      shapes_zip(tmp_path, [1, 2], 16, seed=4), model="shapes")
        store = client.app.state.strata.store
        first = start_worker(settings, log)
        try:
            wait_task(client, h, task["id"], until=("running",), timeout_s=120)
            state_key = f"models/{model_ids(client)['shapes']}/training/{task['id']}/last.pt"
            deadline = time.monotonic() + 180
            while not store.exists(state_key) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert store.exists(state_key), log.read_text()[-3000:]
        finally:
            stop(first, signal.SIGKILL)
        second = start_worker(settings, log)
        try:
            done = wait_task(client, h, task["id"], timeout_s=300)
        finally:
            stop(second, signal.SIGTERM)
        assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
        assert done["attempts"] == 2 and done["progress"]["resumed_from_epoch"] >= 1
        assert [v["version"] for v in client.get("/models/shapes/versions", headers=h).json()] == [1]
    assert log.read_text().count("training on 2 processes (gloo)") == 2
