"""Schemathesis over the whole OpenAPI document (issue 11): every operation, each generated request
sent once with an admin key for every model and once with no key. No answer may be a 5xx, and each
must be one the document declares (status, content type, headers) in the shape it declares.

It runs on PostgreSQL, Redis and the S3 endpoint, where the 32-bit columns and the refusal of NUL
in text bite. Generation is derandomized (the same requests every run) and bounded: ``MAX_EXAMPLES``
generated requests per operation, plus Schemathesis' examples and boundary values (its coverage
phase: integers past 2**31, NUL, empty and overlong strings, missing and unknown parameters).

Seeded (``seeded``): model ``m`` with versions 1 -> 2 (production) -> 3 whose checkpoints are real,
loadable networks (tests/services/inference/helpers.publish), made by tasks that succeeded; every
other generated request with path parameters names those rows, so routes reach real rows, and
``/segment`` really segments the images Schemathesis generates, not only "no such model". No
operation is skipped: a generated training upload fails fast (its files are not an image dataset).
"""

from __future__ import annotations

import itertools

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from api.main import create_app
from services.auth import create_key, list_keys, revoke_key
from services.config import load_settings
from services.db.models import Task
from services.db.session import make_engine, make_session_factory, session_scope
from services.jobs import lifecycle
from services.learning.names import DEFAULT_METHOD
from services.storage import open_store
from tests.services.inference.helpers import create_model, publish, task_id_of

MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
V1 = {0: "background", 1: "cat", 2: "dog"}
V2 = {**V1, 3: "bird"}
V3 = {**V2, 4: "fish"}
# Answers whose 503 is what they document, not a fault: readiness while the production version loads.
READINESS = {"/readyz", "/readyz/detail"}


@pytest.fixture
def settings(server_settings):
    """The server flavour only: PostgreSQL is where integers past 2**31 and NUL bytes break queries."""
    return server_settings


@pytest.fixture
def seeded(prepared) -> dict:
    """Model ``m`` (versions 1, 2 in production, 3) and the only active admin key, so that a
    generated DELETE /keys/{id} may revoke other keys but never this one (the last admin key is
    refused, 409). Returns the key and the path parameters that name seeded rows."""
    engine = make_engine(prepared)
    sessions = make_session_factory(engine)
    try:
        store = open_store(prepared)
        model_id = create_model(sessions, "m")
        publish(sessions, store, prepared, model_id=model_id, version=1, class_map=V1, winner=1, to_production=False)
        publish(sessions, store, prepared, model_id=model_id, version=2, class_map=V2, winner=3, parent=1)
        publish(sessions, store, prepared, model_id=model_id, version=3, class_map=V3, winner=4, parent=2,
                to_production=False)
        with session_scope(sessions) as s:
            for task in s.scalars(select(Task)):  # as a worker leaves them: resolved spec, succeeded
                task.spec = {**task.spec, "method": DEFAULT_METHOD}
                lifecycle.succeed(task)
            key, plaintext = create_key(s, "fuzz admin", ["admin", "infer"])
            for other in list_keys(s):
                if other.id != key.id:
                    revoke_key(s, other.id)
            key_id = key.id
    finally:
        engine.dispose()
    return {"key_id": key_id, "headers": {"Authorization": f"Bearer {plaintext}"},
            "rows": {"name": "m", "version": "2", "task_id": task_id_of(model_id, 3)}}


@pytest.fixture
def app(prepared, seeded):
    """The application on the prepared servers; Schemathesis runs its lifespan from the first request
    to the end of the test (its pytest plugin ends it at teardown)."""
    return create_app(prepared)


# The document the application serves, read without starting it (generation happens at collection).
schema = schemathesis.openapi.from_dict(create_app(load_settings()).openapi())
_turn = itertools.count()


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_every_operation_answers_what_it_documents(case, app, seeded) -> None:
    params = case.path_parameters or {}
    if params and next(_turn) % 2 == 0:  # every other request names seeded rows
        params.update({k: v for k, v in seeded["rows"].items() if k in params})
    if case.operation.path == "/keys/{key_id}" and params.get("key_id") == seeded["key_id"]:
        params["key_id"] = seeded["key_id"] + 1  # never revoke the key the rest of the run uses
    for headers in (seeded["headers"], None):
        if headers is None:  # the same request without a key
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        response = case.call(app=app, headers=headers)
        checks = CHECKS
        if case.operation.path in READINESS and response.status_code == 503:
            # Not ready while the production version loads (in the background, from the first request).
            assert response.json()["failing"] == ["model"], response.text
            checks = [c for c in CHECKS if c is not not_a_server_error]
        case.validate_response(response, checks=checks, headers=headers)


def test_the_document_declares_one_error_shape_and_the_shared_answers() -> None:
    """api/openapi.py: every error body is {"detail": str}, keys can be refused on every route that
    takes one, bodies can be too large on every route that takes one."""
    document = create_app(load_settings()).openapi()
    assert "HTTPValidationError" not in str(document) and document["components"]["schemas"]["Error"]["required"] == [
        "detail"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if operation.get("security"):
                assert {"401", "403", "503"} <= set(responses), (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= set(responses), (method, path)
            for code, response in responses.items():
                if int(code) >= 400 and "health" not in operation.get("tags", ()):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}, (method, path, code)
