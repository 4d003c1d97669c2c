import logging
import time

from fastapi.testclient import TestClient

from api.main import create_app
from api.routes import health
from services.auth import create_key
from services.db.session import session_scope
from services.registry.models import create_model, get_model
from tests.conftest import bearer, free_port
from tests.services.inference.helpers import checkpoint_of, publish

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


def test_readyz_names_a_database_not_at_head(settings, monkeypatch, caplog):
    # Not prepared: the database has no schema yet (so no key can be checked: the log says why).
    from services.storage import open_store

    monkeypatch.setattr(health, "_last_logged", {})
    open_store(settings).ensure_ready()
    with caplog.at_level(logging.WARNING, logger=health.__name__), TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
        c.get("/readyz")
    assert r.status_code == 503
    assert "database" in r.json()["failing"] and r.json()["checks"]["database"] == "unavailable"
    logged = [rec.getMessage() for rec in caplog.records if rec.name == health.__name__]
    assert len(logged) == 1 and "readiness: database is unavailable: SchemaNotAtHead" in logged[0]  # once
    assert "strata db upgrade" in logged[0]


def test_readyz_names_an_unreachable_object_store_and_only_an_admin_sees_where(embedded_settings):
    from services.cli.run import prepare

    prepare(embedded_settings)
    port = free_port()
    dead = embedded_settings.model_copy(update={
        "s3_endpoint": f"http://127.0.0.1:{port}", "s3_access_key": "k", "s3_secret_key": "s",
        "s3_bucket": "hidden-bucket"})
    with TestClient(create_app(dead)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["failing"] == ["object_store"]
        assert r.json()["checks"] == {"database": "ok", "object_store": "unavailable", "broker": "ok",
                                      "model": "no model exists yet: create one with POST /models"}
        assert "127.0.0.1" not in r.text and str(port) not in r.text and "hidden-bucket" not in r.text
        assert c.get("/readyz/detail").status_code == 401
        with session_scope(c.app.state.strata.sessions) as s:
            limited = create_key(s, "north admin", ["admin"], models=[create_model(s, "north")])[1]
        assert c.get("/readyz/detail", headers=bearer(limited)).status_code == 403
        r = c.get("/readyz/detail", headers=bearer(make_admin(c)))
    assert r.status_code == 503 and r.json()["failing"] == ["object_store"]
    assert str(port) in r.json()["checks"]["object_store"] and r.json()["checks"]["database"] == "ok"


def test_readyz_keeps_the_database_user_host_and_port_to_itself(embedded_settings):
    port = free_port()
    dead = embedded_settings.model_copy(update={
        "database_url": f"postgresql+psycopg://dbuser-x:pw@127.0.0.1:{port}/strata"})
    with TestClient(create_app(dead)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["failing"][0] == "database"
    assert r.json()["checks"]["database"] == "unavailable"
    assert r.json()["checks"]["model"] in ("cannot read the production aliases",
                                           "looking up the production models in the registry")
    for secret in ("dbuser-x", "127.0.0.1", str(port), "Error"):
        assert secret not in r.text, (secret, r.text)


def test_a_model_that_cannot_be_loaded_says_why_only_in_detail(prepared):
    with TestClient(create_app(prepared)) as c:
        assert c.post("/models", json={"name": "broken"}, headers=bearer(make_admin(c))).status_code == 201
        state = c.app.state.strata
        model_id = get_model_id(state.sessions, "broken")
        publish(state.sessions, state.store, prepared, model_id=model_id, version=1, class_map=CLASSES, winner=1)
        state.store.delete(checkpoint_of(state.sessions, model_id, 1))
    with TestClient(create_app(prepared)) as c:  # a restart: production version 1 must be loaded
        deadline = time.monotonic() + 60
        while "cannot be loaded" not in (r := c.get("/readyz")).json()["models"]["broken"]:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.status_code == 503 and r.json()["models"]["broken"] == "production version 1 cannot be loaded"
        detail = c.get("/readyz/detail", headers=bearer(make_admin(c))).json()
    assert detail["models"]["broken"].startswith("production version 1 cannot be loaded: model version 1 ")


def test_readyz_names_an_unreachable_broker(embedded_settings):
    from services.cli.run import prepare

    prepare(embedded_settings)
    dead = embedded_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["failing"] == ["broker"]
