"""The records of a version's exports (``version_exports``): which object holds each format, with
its sha256 and size. The files themselves are built by ``services/inference/export.py``; this
module only reads and writes the rows.

An export is a cache: stored first, recorded second (``record_export``), so a row never names an
object that is not there yet; two requests that exported at once both store (under keys holding
their digests) and the second to record keeps the first one's row and is told to delete its own
object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import ExportFormat, VersionExport


@dataclass(frozen=True)
class ExportRecord:
    """One recorded export, as plain values (no session attached)."""

    model_id: int
    version: int
    format: ExportFormat
    key: str
    sha256: str
    bytes: int
    contract: str
    created_at: datetime

    @classmethod
    def of(cls, row: VersionExport) -> "ExportRecord":
        return cls(row.model_id, row.version, ExportFormat(row.format), row.key, row.sha256, row.bytes, row.contract,
                   row.created_at)


def find_export(session: Session, model_id: int, version: int, format: ExportFormat) -> ExportRecord | None:
    row = session.get(VersionExport, (model_id, version, format.value))
    return ExportRecord.of(row) if row is not None else None


def record_export(session: Session, model_id: int, version: int, format: ExportFormat, *, key: str, sha256: str,
                  size: int, contract: str) -> tuple[ExportRecord, list[str]]:
    """Record an export just stored under ``key``; returns the record to serve and the keys no row
    names any more, to delete once the caller has committed.

    A row of the same ``contract`` recorded meanwhile (another request exported at the same time)
    is kept: this export's object is then the one to delete (unless it is the same key). A row of
    another contract (written by an older Strata) is replaced, and its object is to delete. Two
    first inserts at once: one commit fails (the primary key); the caller calls this again."""
    row = session.get(VersionExport, (model_id, version, format.value), with_for_update=True)
    if row is not None and row.contract == contract:
        return ExportRecord.of(row), [key] if row.key != key else []
    stale = [row.key] if row is not None and row.key != key else []
    if row is None:
        row = VersionExport(model_id=model_id, version=version, format=format.value)
        session.add(row)
    row.key, row.sha256, row.bytes, row.contract, row.created_at = key, sha256, size, contract, utcnow()
    session.flush()
    return ExportRecord.of(row), stale


def delete_exports(session: Session, model_id: int, version: int | None = None) -> list[str]:
    """Delete the rows of a version's exports (every version's without ``version``); returns their
    object keys, to delete once the caller has committed."""
    where = [VersionExport.model_id == model_id]
    if version is not None:
        where.append(VersionExport.version == version)
    keys = list(session.scalars(select(VersionExport.key).where(*where).order_by(VersionExport.key)))
    session.execute(delete(VersionExport).where(*where))
    return keys
