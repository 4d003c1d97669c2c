"""The one error vocabulary of the domain: every error a user can cause or meet is one of these.

Each module raises its own named subclasses (``TaskNotFound``, ``UploadRejected``, ...), and
every one of them derives from exactly one category below. The category alone decides how an
interface reports it: the API maps categories to HTTP statuses in one place
(``api/errors.py``), the CLI prints the message and exits 2. Messages say what is wrong and
where, in the caller's terms, because they reach the user unchanged.

The categories also derive from the builtin exception closest in meaning (``LookupError``,
``ValueError``), so code that catches those keeps working.

Not here: control flow inside one component (a training run asked to stop, a task that must
wait for its predecessor); those are plain exceptions of the module that raises and catches them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class StrataError(Exception):
    """Base of every domain error; the message is for the user."""


class NotFound(StrataError, LookupError):
    """What was asked for does not exist (HTTP 404)."""


class Conflict(StrataError):
    """The request is well formed but contradicts the service's current state (HTTP 409)."""


class InvalidInput(StrataError, ValueError):
    """The input is malformed or out of range (HTTP 422); the message names the field or file."""


class TooLarge(InvalidInput):
    """The input is over a size limit (HTTP 413)."""


class Unavailable(StrataError):
    """A dependency (database, object store, broker, a model) cannot serve now (HTTP 503);
    the same request may succeed later.

    ``dependency`` names the server that failed ("database", "object store", "broker"); an
    interface shows a caller that name only, never where the server lives (the message, which
    may hold a host or a bucket, goes to the log)."""

    dependency: str | None = None


def dependency_of(err: BaseException) -> str | None:
    """The dependency an error (or an error it was raised from) says is down, or None."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, Unavailable) and current.dependency:
            return current.dependency
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_validation_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's errors as one sentence, each prefixed by where it is ("hyperparameters.lr: ...")."""
    return "; ".join(_describe(e) for e in errors)


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()))
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "json_invalid":
        return f"not valid JSON ({error.get('ctx', {}).get('error', error['msg'])})"
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
