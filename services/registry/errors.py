"""Errors of the model registry; each message names the version, class or alias at fault."""

from __future__ import annotations


class RegistryError(ValueError):
    """Base class: a registry operation was asked something impossible."""


class VersionNotFound(RegistryError, LookupError):
    """No model version (or alias) by that name."""


class InvalidVersionRecord(RegistryError):
    """``record_version`` got inconsistent data (class map, metrics, old/new classes)."""
