"""How errors become responses: one table from the domain's error categories to HTTP statuses,
and one JSON shape for every error on every route: ``{"detail": "<what is wrong, and where>"}``.

Routes do not catch domain errors: they call ``services`` and let the handlers here answer.
FastAPI's own request validation errors get the same shape, their locations written the way the
spec's errors are ("query.limit: ..."). Anything else is a fault of ours: a 500 whose detail
says only that (the traceback goes to the server's log, as Starlette always re-raises it).
"""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    StrataError,
    TooLarge,
    Unavailable,
    describe_validation_errors,
)

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
    return error_response(status_of(err), str(err))


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
    app.add_exception_handler(Exception, _server_fault)
