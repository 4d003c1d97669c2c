"""PostgreSQL dies and comes back while the API runs: 503 with Retry-After everywhere it is needed,
serving goes on from memory, and everything heals without a restart.

The database is the test session's own cluster (tests.servers.PostgresServer), stopped with
``pg_ctl -m immediate`` (as if it crashed), so the shared server other tests use is never touched.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from services.cli.run import prepare
from tests.api.test_segment import V1, make_key, new_model, segment
from tests.conftest import bearer
from tests.services.inference.helpers import publish

# (method, path, body): authenticated routes that need the database for every request.
NEEDS_DATABASE = [
    ("GET", "/models", None),
    ("GET", "/models/pets/versions", None),
    ("GET", "/models/pets/classes", None),
    ("GET", "/tasks?status=failed", None),  # (the seeded version's task row is a stub)
    ("GET", "/keys", None),
    ("GET", "/workers", None),
    ("POST", "/models", {"name": "other"}),
]


@pytest.fixture
def db_settings(server_settings, own_postgres):
    settings = server_settings.model_copy(update={"database_url": own_postgres.url})
    prepare(settings)
    return settings


def call(client, headers, method: str, path: str, body):
    return client.request(method, path, headers=headers, json=body)


def test_database_down_is_503_except_healthz_and_serving_and_heals_without_restart(db_settings, own_postgres):
    with TestClient(create_app(db_settings)) as client:
        admin, infer = bearer(make_key(client, ["admin"])), bearer(make_key(client, ["infer"]))
        model_id = new_model(client, admin)
        state = client.app.state.strata
        publish(state.sessions, state.store, db_settings, model_id=model_id, version=1, class_map=V1, winner=2)
        assert segment(client, infer).status_code == 200  # loaded, and the key and model verified once

        own_postgres.stop()
        assert client.get("/healthz").status_code == 200
        started = time.monotonic()
        served = segment(client, infer)
        assert served.status_code == 200 and served.json()["model_version"] == 1, served.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["failing"] == ["database"]
        assert ready.headers["retry-after"] == "5"
        for method, path, body in NEEDS_DATABASE:
            r = call(client, admin, method, path, body)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["retry-after"] == "5"
            assert r.json()["detail"] == "database unavailable: retry in a few seconds", path
            assert str(own_postgres.port) not in r.text
        unknown = segment(client, bearer("strata_" + "x" * 43))  # cannot be verified now: not a 401
        assert unknown.status_code == 503
        print(f"database down: /segment served, {len(NEEDS_DATABASE) + 2} other requests answered in "
              f"{time.monotonic() - started:.2f} s")

        own_postgres.start()
        for method, path, body in NEEDS_DATABASE:
            r = call(client, admin, method, path, body)
            assert r.status_code in (200, 201), (path, r.status_code, r.text)
        assert segment(client, bearer("strata_" + "x" * 43)).status_code == 401
        assert client.get("/readyz").status_code == 200
