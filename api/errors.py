"""How errors become responses: one table from the domain's error categories to HTTP statuses,
and one JSON shape for every error on every route: ``{"detail": "<what is wrong, and where>"}``.

Routes do not catch domain errors: they call ``services`` and let the handlers here answer.
FastAPI's own request validation errors get the same shape, their locations written the way the
spec's errors are ("query.limit: ..."). Anything else is a fault of ours: a 500 whose detail
says only that (the traceback goes to the server's log, as Starlette always re-raises it).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.db.errors import CONNECTION_ERRORS, DatabaseUnavailable, is_outage
from services.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    StrataError,
    TooLarge,
    Unavailable,
    describe_validation_errors,
)

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5  # what a 503 tells a client to wait: outages of our dependencies heal by themselves

# Most specific first: TooLarge is an InvalidInput.
STATUS_OF: tuple[tuple[type[StrataError], int], ...] = (
    (NotFound, status.HTTP_404_NOT_FOUND),
    (Conflict, status.HTTP_409_CONFLICT),
    (TooLarge, status.HTTP_413_CONTENT_TOO_LARGE),
    (InvalidInput, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
)


def status_of(err: StrataError) -> int:
    """The HTTP status of a domain error; 500 for one outside the categories (a server fault)."""
    return next((code for kind, code in STATUS_OF if isinstance(err, kind)), status.HTTP_500_INTERNAL_SERVER_ERROR)


def error_response(code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code)


async def _domain_error(request: Request, err: StrataError) -> JSONResponse:
    if isinstance(err, Unavailable):
        return _unavailable(err)
    return error_response(status_of(err), str(err))


def _unavailable(err: Unavailable) -> JSONResponse:
    """503 with Retry-After. A dependency's failure names the dependency only: where it lives
    (host, port, bucket) and the driver's words go to the log, not to whoever called."""
    if err.dependency is None:  # e.g. a model version that cannot be loaded: the message is the answer
        detail = str(err)
    else:
        log.warning("%s unavailable: %s", err.dependency, err)
        detail = f"{err.dependency} unavailable: retry in a few seconds"
    response = error_response(status.HTTP_503_SERVICE_UNAVAILABLE, detail)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def _database_down(request: Request, err: Exception) -> JSONResponse:
    """The driver's own connection errors, wherever a route met them (mid-request included); the
    same exception types for a fault of ours (a missing table) are a 500."""
    if not is_outage(err):
        log.error("database error on %s %s", request.method, request.url.path, exc_info=err)
        return await _server_fault(request, err)
    return _unavailable(DatabaseUnavailable(f"{type(err).__name__}: {err}"))


async def _invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
    return error_response(status.HTTP_422_UNPROCESSABLE_CONTENT, describe_validation_errors(err.errors()))


async def _server_fault(request: Request, err: Exception) -> JSONResponse:
    return error_response(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal server error (see the server log)")


def install_error_handlers(app: FastAPI) -> None:
    # One handler per category, not one for StrataError: a domain error outside the categories is
    # a fault of ours and takes the 500 path below, logged with its traceback.
    for kind, _code in STATUS_OF:
        app.add_exception_handler(kind, _domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    for kind in CONNECTION_ERRORS:
        app.add_exception_handler(kind, _database_down)
    app.add_exception_handler(Exception, _server_fault)
