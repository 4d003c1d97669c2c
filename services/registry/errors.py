"""Errors of the model registry; each message names the version, class or alias at fault."""

from __future__ import annotations

from services.errors import Conflict, InvalidInput, NotFound


class VersionNotFound(NotFound):
    """No model version (or alias) by that name."""


class InvalidVersionRecord(InvalidInput):
    """``record_version`` got inconsistent data (class map, metrics, old/new classes)."""


class VersionInUse(Conflict):
    """The version cannot be deleted: it is in production, has descendants, or a task may start from it."""
