"""The object store dies in the middle of an upload, or its bucket is gone: 503 naming it, no rows,
and no objects left behind once the store is back (nobody restarts anything).

The API talks S3 to moto through tests.servers.FlakyProxy, which dies after forwarding a set number
of bytes: a store that fails part-way through storing a task's images.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from services.cli.run import prepare
from services.db.models import DatasetItem, SemanticClass, StagedUpload, Task
from services.storage import open_store
from tests.api.test_segment import make_key
from tests.conftest import bearer
from tests.servers import FlakyProxy
from tests.worker.test_training_flow import SMALL, create_model, shapes_zip

SPEC = {**SMALL, "classes": ["square", "disc"], "epochs": 1}


@pytest.fixture
def proxy(s3_endpoint):
    p = FlakyProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    p.up()
    yield p
    p.down()


@pytest.fixture
def store_settings(server_settings, proxy):
    settings = server_settings.model_copy(update={"s3_endpoint": proxy.url, "outbox_relay_s": 0.5})
    prepare(settings)
    return settings


def post_task(client, headers, archive: bytes):
    return client.post("/models/shapes/tasks", headers=headers, data={"spec": json.dumps(SPEC)},
                       files={"archive": ("data.zip", archive, "application/zip")})


def rows(client) -> dict[str, int]:
    with client.app.state.strata.sessions() as s:
        return {table.__name__: s.query(table).count() for table in (Task, SemanticClass, DatasetItem, StagedUpload)}


def test_store_dying_mid_upload_is_503_and_leaves_nothing_once_back(store_settings, s3_endpoint, proxy, tmp_path):
    upstream = open_store(store_settings.model_copy(update={"s3_endpoint": s3_endpoint}))  # around the proxy
    archive = shapes_zip(tmp_path, [1, 2], 24, seed=3)
    with TestClient(create_app(store_settings)) as client:
        admin = bearer(make_key(client, ["admin"]))
        create_model(client, admin, "shapes")
        before = rows(client)

        proxy.arm(fail_after_bytes=20_000)  # a few images in
        started = time.monotonic()
        r = post_task(client, admin, archive)
        assert r.status_code == 503, r.text
        failed_s = time.monotonic() - started
        assert failed_s < 30
        assert r.headers["retry-after"] == "5"
        assert r.json()["detail"] == "object store unavailable: retry in a few seconds"
        assert {**rows(client), "StagedUpload": 0} == before  # no task, class or item rows
        assert rows(client)["StagedUpload"] == 1  # ... only the note of what to delete
        assert list(upstream.list("models/")), "the store took part of the upload before it died"

        proxy.up()
        back = time.monotonic()
        deadline = time.monotonic() + 30
        while (list(upstream.list("models/")) or rows(client)["StagedUpload"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list(upstream.list("models/")) == [] and rows(client) == before
        print(f"store died mid-upload: 503 in {failed_s:.2f} s; its objects deleted "
              f"{time.monotonic() - back:.1f} s after the store was back")

        again = post_task(client, admin, archive)  # and the service works again, unrestarted
        assert again.status_code == 202, again.text


def test_a_missing_bucket_is_503_at_once(store_settings, tmp_path):
    gone = store_settings.model_copy(update={"s3_bucket": "strata-never-created"})
    with TestClient(create_app(gone)) as client:
        admin = bearer(make_key(client, ["admin"]))
        create_model(client, admin, "shapes")
        started = time.monotonic()
        r = post_task(client, admin, shapes_zip(tmp_path, [1, 2], 4, seed=3))
        assert r.status_code == 503 and time.monotonic() - started < 10, r.text
        print(f"missing bucket: 503 in {time.monotonic() - started:.2f} s")
        assert r.json()["detail"] == "object store unavailable: retry in a few seconds"
        assert "strata-never-created" not in r.text
        assert rows(client)["Task"] == 0
