"""Object storage: one streaming, atomic interface (:class:`ObjectStore`) with a filesystem
backend (embedded mode) and an S3/MinIO backend (production).  See docs/storage.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.storage.base import ObjectInfo, ObjectReader, ObjectStore
from services.storage.errors import (
    IntegrityError,
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
)
from services.storage.fs import FilesystemStore
from services.storage.keys import validate_key, validate_prefix
from services.storage.s3 import S3Store

if TYPE_CHECKING:
    from services.config import Settings


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings point at: S3/MinIO when ``STRATA_S3_ENDPOINT`` is set, else
    files under ``settings.objects_dir``.  Does no I/O: call ``ensure_ready()`` at start-up
    and ``check()`` for readiness."""
    if settings.s3_endpoint:
        return S3Store(
            settings.s3_endpoint,
            access_key=settings.s3_access_key or "",
            secret_key=settings.s3_secret_key or "",
            bucket=settings.s3_bucket,
            region=settings.s3_region,
        )
    return FilesystemStore(settings.objects_dir)


__all__ = [
    "FilesystemStore",
    "IntegrityError",
    "InvalidKey",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectReader",
    "ObjectStore",
    "S3Store",
    "StorageError",
    "StorageUnavailable",
    "open_store",
    "validate_key",
    "validate_prefix",
]
