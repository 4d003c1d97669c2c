from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import free_port


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_when_everything_is_reachable(client):
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["failing"] == []


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
