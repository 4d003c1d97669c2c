"""The OpenAPI document, completed with what every route answers beside its own responses.

Routes declare what is theirs (``responses=`` and ``response_model``). What comes from the shared
machinery is added here, once, so the document matches what clients (and tests/api/test_openapi_fuzz.py,
which checks every answer against it) really get:

- every error body is ``{"detail": "<what is wrong, and where>"}`` (api/errors.py), request
  validation errors included: FastAPI's default document says a list of objects;
- an operation that needs a key can answer 401 (no, malformed, invalid or revoked key), 403 (the
  key lacks the scope or may not use the model) and 503 (the key cannot be checked: the database
  is unavailable);
- an operation with a body can answer 400 (a body that cannot be parsed as its content type says:
  FastAPI's own answer) and 413 (over STRATA_MAX_UPLOAD_BYTES, api/limits.py).

Health routes keep the error bodies they declare (``/readyz`` answers its own).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA = "Error"
ERROR = {
    "title": ERROR_SCHEMA,
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "What is wrong, and where, in the caller's terms."}},
    "required": ["detail"],
}
ERROR_CONTENT = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": ERROR_CONTENT, **extra}


AUTH_RESPONSES = {
    "401": _error("no key, a malformed Authorization header, or an invalid or revoked key",
                  headers={"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}),
    "403": _error("the key lacks the scope, or may not use this model"),
    "503": _error("a dependency (database, object store, broker) is unavailable; the same request may succeed later"),
}
BODY_RESPONSES = {
    "400": _error("the body cannot be read as its content type says (JSON that is not UTF-8, a broken form)"),
    "413": _error("the body is over the upload limit (STRATA_MAX_UPLOAD_BYTES)"),
}
VALIDATION = "the request is malformed; the message names the parameter or field (\"query.limit: ...\")"
OWN_ERRORS = {"health"}  # tags of operations that answer their own error bodies (/readyz)


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and /openapi.json, /docs) return the completed document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the shared responses and the one error shape to every operation of ``document`` (in place)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = ERROR
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                _add(responses, AUTH_RESPONSES)
            if "requestBody" in operation:
                _add(responses, BODY_RESPONSES)
            if set(operation.get("tags", ())) & OWN_ERRORS:
                continue
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    _error_body(code, response)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def _add(responses: dict[str, Any], shared: dict[str, dict[str, Any]]) -> None:
    for code, response in shared.items():
        responses.setdefault(code, dict(response))


def _error_body(code: str, response: dict[str, Any]) -> None:
    if code == "422" and response.get("description") == "Validation Error":
        response["description"] = VALIDATION
    content = response.get("content", {})
    if not content or "HTTPValidationError" in str(content):
        response["content"] = ERROR_CONTENT
