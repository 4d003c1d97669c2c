import time

from fastapi.testclient import TestClient

from api.main import create_app
from services.auth import create_key
from services.db.session import session_scope
from services.registry.models import get_model
from tests.conftest import bearer, free_port
from tests.services.inference.helpers import publish

CLASSES = {0: "background", 1: "cat", 2: "dog"}


def make_admin(client) -> str:
    with session_scope(client.app.state.strata.sessions) as s:
        return create_key(s, "admin", ["admin"])[1]


def get_model_id(sessions, name: str) -> int:
    with sessions() as s:
        return get_model(s, name).id


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_when_everything_is_reachable(client):
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["failing"] == [] and r.json()["models"] == {}


def test_readyz_reports_each_model_by_name(prepared):
    """"models" holds every model's own production state; serving one model's production version is
    not waited for on behalf of another."""
    with TestClient(create_app(prepared)) as c:
        for name in ("serving", "idle", "empty", "later"):
            assert c.post("/models", json={"name": name}, headers=bearer(make_admin(c))).status_code == 201
        state = c.app.state.strata
        ids = {name: get_model_id(state.sessions, name) for name in ("serving", "idle", "later")}
        publish(state.sessions, state.store, prepared, model_id=ids["serving"], version=1, class_map=CLASSES, winner=1)
        publish(state.sessions, state.store, prepared, model_id=ids["serving"], version=2, class_map=CLASSES,
                winner=2, parent=1)
        publish(state.sessions, state.store, prepared, model_id=ids["idle"], version=1, class_map=CLASSES, winner=1,
                to_production=False)
    with TestClient(create_app(prepared)) as c:  # a restart: the registry is read at startup
        deadline = time.monotonic() + 60
        while (r := c.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
            assert r.json()["failing"] == ["model"] and r.json()["models"]["serving"] == "loading production version 2"
            time.sleep(0.05)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["checks"]["model"] == "1 of 4 model(s) loaded"
        assert body["models"] == {
            "empty": "no version has been trained yet: segmenting answers 409 until a task produces one",
            "idle": "no version is in production yet (set the production alias); ?version=N works meanwhile",
            "later": "no version has been trained yet: segmenting answers 409 until a task produces one",
            "serving": "serving production version 2",
        }
        # Another model's production moves: only that model's entry changes.
        state = c.app.state.strata
        publish(state.sessions, state.store, prepared, model_id=ids["later"], version=1, class_map=CLASSES, winner=1,
                to_production=False)
        assert c.put("/models/later/aliases/production", json={"version": 1},
                     headers=bearer(make_admin(c))).status_code == 200
        deadline = time.monotonic() + 60
        while (body := c.get("/readyz").json())["models"]["later"] != "serving production version 1":
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert body["status"] == "ready" and body["checks"]["model"] == "2 of 4 model(s) loaded"
        assert body["models"]["serving"] == "serving production version 2"


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/readyz" in client.get("/openapi.json").json()["paths"]


def test_readyz_names_a_database_not_at_head(settings):
    # Not prepared: the database has no schema yet.
    from services.storage import open_store

    open_store(settings).ensure_ready()
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    assert "database" in r.json()["failing"]
    assert "head" in r.json()["checks"]["database"].lower() or "alembic" in r.json()["checks"]["database"].lower()


def test_readyz_names_an_unreachable_object_store(embedded_settings):
    from services.cli.run import prepare

    prepare(embedded_settings)
    dead = embedded_settings.model_copy(update={
        "s3_endpoint": f"http://127.0.0.1:{free_port()}", "s3_access_key": "k", "s3_secret_key": "s"})
    with TestClient(create_app(dead)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["failing"] == ["object_store"]


def test_readyz_names_an_unreachable_broker(embedded_settings):
    from services.cli.run import prepare

    prepare(embedded_settings)
    dead = embedded_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["failing"] == ["broker"]
