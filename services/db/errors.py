"""Errors of the database layer; each message says what is wrong and which setting to look at."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from services.errors import StrataError, Unavailable

DATABASE_URL_VAR = "STRATA_DATABASE_URL"
# What SQLAlchemy raises when the server is down, restarting or unreachable, mid-request included
# (the pool's pre-ping replaces a dead connection once the server is back, so these heal by themselves).
CONNECTION_ERRORS: tuple[type[Exception], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open")


def is_outage(err: Exception) -> bool:
    """Whether one of ``CONNECTION_ERRORS`` means the database cannot be reached now (the server is
    down, restarting, or its connection was lost), as opposed to a fault of ours that the driver
    reports the same way (SQLite's "no such table" is an OperationalError too)."""
    if isinstance(err, sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    if not isinstance(err, sa_exc.OperationalError):
        return False
    if err.connection_invalidated:
        return True
    sqlstate = getattr(err.orig, "sqlstate", None)
    if sqlstate:  # PostgreSQL: connection exceptions (08), server shutting down or starting (57P0x)
        return sqlstate.startswith(("08", "57P"))
    if type(err.orig).__module__.startswith("psycopg"):
        return True  # no SQLSTATE: the connection itself failed
    return any(word in str(err.orig).lower() for word in _SQLITE_TRANSIENT)


class DatabaseError(StrataError):
    """Base class: the database cannot be used as configured."""


class DatabaseUnavailable(DatabaseError, Unavailable):
    """The database cannot be reached (wrong host, port, credentials or name)."""

    dependency = "database"


class SchemaNotAtHead(DatabaseError, Unavailable):
    """The schema is missing or at another revision than this code's migration head."""

    dependency = "database"


def display_url(url: str) -> str:
    """The URL with any password masked, safe to print and log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we could locate; show only the scheme
        return url.split("://", 1)[0] + "://..."
