"""One error vocabulary: each domain category has one status, and every error on every route has
one shape, ``{"detail": "<what is wrong, and where>"}``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.errors import status_of
from api.main import create_app
from services.db.session import make_engine, make_session_factory, session_scope
from services.errors import Conflict, InvalidInput, NotFound, StrataError, TooLarge, Unavailable
from services.jobs.errors import RegistrationConflict, TaskNotFound
from services.registry.aliases import AliasConflict, InvalidAlias
from services.registry.errors import InvalidVersionRecord, VersionInUse, VersionNotFound
from services.registry.models import InvalidModel, ModelConflict, ModelNotFound, create_model
from services.storage import StorageError, StorageUnavailable
from tests.api.test_auth import bearer, make_key
from tests.api.test_models import upload
from tests.conftest import free_port


@pytest.mark.parametrize("error, status", [
    (NotFound(), 404), (TaskNotFound(), 404), (Conflict(), 409), (RegistrationConflict(), 409),
    (InvalidInput(), 422), (TooLarge(), 413), (Unavailable(), 503), (StorageUnavailable(), 503),
    (StrataError(), 500), (ModelNotFound(), 404), (VersionNotFound(), 404), (ModelConflict(), 409),
    (VersionInUse(), 409), (AliasConflict(), 409), (InvalidModel(), 422), (InvalidAlias(), 422),
    (InvalidVersionRecord(), 422),
])
def test_each_category_has_one_status(error: StrataError, status: int) -> None:
    assert status_of(error) == status


def only_detail(response) -> str:
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    return body["detail"]


def test_domain_and_request_errors_share_one_shape(client, admin_headers) -> None:
    r = client.get("/tasks/nope", headers=admin_headers)
    assert r.status_code == 404 and only_detail(r) == "no task with id 'nope'"
    r = client.get("/tasks", params={"limit": 0}, headers=admin_headers)
    assert r.status_code == 422 and only_detail(r) == "query.limit: Input should be greater than or equal to 1"
    r = client.post("/keys", json={"name": "x", "scopes": ["root"]}, headers=admin_headers)
    assert r.status_code == 422
    assert only_detail(r).startswith("body.scopes.0: Input should be 'admin', 'infer' or 'read'")
    r = client.delete("/keys/999", headers=admin_headers)
    assert r.status_code == 404 and only_detail(r) == "no API key with id 999"
    r = client.get("/tasks")
    assert r.status_code == 401 and only_detail(r).startswith("missing Authorization header")


def test_model_routes_share_the_shape(client, admin_headers) -> None:
    r = client.get("/models/nope", headers=admin_headers)
    assert r.status_code == 404 and only_detail(r).startswith("no model named 'nope'")
    assert client.post("/models", json={"name": "m"}, headers=admin_headers).status_code == 201
    r = client.post("/models", json={"name": "m"}, headers=admin_headers)
    assert r.status_code == 409 and only_detail(r) == "a model named 'm' already exists"
    r = client.post("/models", json={"name": "no spaces"}, headers=admin_headers)
    assert r.status_code == 422 and only_detail(r).startswith("body.name: String should match pattern")
    r = client.get("/models/m/versions/staging", headers=admin_headers)
    assert r.status_code == 404 and "is neither a version number nor a set alias" in only_detail(r)
    r = client.get("/models/m/versions/%C2%B2", headers=admin_headers)
    assert r.status_code == 422 and only_detail(r).startswith("path.version: String should match pattern")
    r = client.put("/models/m/aliases/latest", json={"version": 1}, headers=admin_headers)
    assert r.status_code == 409 and "moved by the service only" in only_detail(r)
    r = client.put("/models/m/aliases/No", json={"version": 1}, headers=admin_headers)
    assert r.status_code == 422 and only_detail(r).startswith("path.alias: String should match pattern")
    limited = bearer(make_key(client, ["admin"], "m admin", models=["m"]))
    r = client.get("/keys", headers=limited)
    assert r.status_code == 403 and "needs a key for every model" in only_detail(r)


def test_an_unreachable_object_store_is_a_503_naming_it_not_where_it_lives(embedded_settings) -> None:
    from services.cli.run import prepare

    prepare(embedded_settings)
    engine = make_engine(embedded_settings)
    with session_scope(make_session_factory(engine)) as s:
        create_model(s, "m")
    engine.dispose()
    dead = embedded_settings.model_copy(update={
        "s3_endpoint": f"http://127.0.0.1:{free_port()}", "s3_access_key": "k", "s3_secret_key": "s"})
    with TestClient(create_app(dead)) as c:
        admin = bearer(make_key(c, ["admin"]))
        r = c.post("/models/m/tasks", data={"spec": '{"classes": ["car"]}'}, files=upload(1), headers=admin)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert only_detail(r) == "object store unavailable: retry in a few seconds"  # the endpoint is in the log only


def test_a_fault_of_ours_is_a_500_that_leaks_nothing(prepared) -> None:
    app = create_app(prepared)

    def broken() -> None:
        raise StorageError("object datasets/secret/key vanished")  # a domain error outside the categories

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/broken")
    assert r.status_code == 500 and only_detail(r) == "internal server error (see the server log)"
