"""One error vocabulary: each domain category has one status, and every error on every route has
one shape, ``{"detail": "<what is wrong, and where>"}``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.errors import status_of
from api.main import create_app
from services.errors import Conflict, InvalidInput, NotFound, StrataError, TooLarge, Unavailable
from services.jobs.errors import RegistrationConflict, TaskNotFound
from services.storage import StorageError, StorageUnavailable
from tests.api.test_tasks import bearer, dataset, post_task
from tests.conftest import free_port


@pytest.mark.parametrize("error, status", [
    (NotFound(), 404), (TaskNotFound(), 404), (Conflict(), 409), (RegistrationConflict(), 409),
    (InvalidInput(), 422), (TooLarge(), 413), (Unavailable(), 503), (StorageUnavailable(), 503),
    (StrataError(), 500),
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
    assert r.status_code == 422 and only_detail(r).startswith("body.scopes.0: Input should be 'admin' or 'infer'")
    r = client.delete("/keys/999", headers=admin_headers)
    assert r.status_code == 404 and only_detail(r) == "no API key with id 999"
    r = client.get("/tasks")
    assert r.status_code == 401 and only_detail(r).startswith("missing Authorization header")


def test_an_unreachable_object_store_is_a_503_naming_it(embedded_settings) -> None:
    from services.cli.run import prepare

    prepare(embedded_settings)
    admin = bearer(embedded_settings, "admin")
    dead = embedded_settings.model_copy(update={
        "s3_endpoint": f"http://127.0.0.1:{free_port()}", "s3_access_key": "k", "s3_secret_key": "s"})
    with TestClient(create_app(dead)) as c:
        r = post_task(c, admin, {"classes": ["car"]}, dataset(2, 1))
    assert r.status_code == 503 and "127.0.0.1" in only_detail(r)


def test_a_fault_of_ours_is_a_500_that_leaks_nothing(prepared) -> None:
    app = create_app(prepared)

    def broken() -> None:
        raise StorageError("object datasets/secret/key vanished")  # a domain error outside the categories

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/broken")
    assert r.status_code == 500 and only_detail(r) == "internal server error (see the server log)"
