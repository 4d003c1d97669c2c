"""Nothing half-stored: the dataset objects of a registration that failed are deleted, even when the
object store died in the middle of the upload and could not take the cleanup at the time.

A registration writes its objects first and its rows last. ``stage`` records the objects' prefix
(its own committed transaction) before the first byte is stored; ``unstage`` deletes that record
in the transaction that writes the task, so a committed task never leaves one behind. When the
registration fails, ``discard`` deletes the objects and then the record; if the store is still
down it marks the record abandoned instead, and ``sweep`` (run by the API's relay every few
seconds) deletes the objects once the store is back. A record whose process died mid-upload is
swept too, like one older than ``MAX_UPLOAD_AGE`` whatever happened to its process.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import StagedUpload
from services.db.session import session_scope
from services.jobs.heartbeats import local_process_alive, worker_name
from services.storage import ObjectStore

log = logging.getLogger(__name__)

# No upload takes this long (a 2 GiB body at 1 MB/s is 35 minutes): past it, a record is debris.
MAX_UPLOAD_AGE = timedelta(hours=6)


def stage(sessions: sessionmaker[Session], prefix: str) -> None:
    """Record that objects under ``prefix`` are about to be stored by this process."""
    with session_scope(sessions) as session:
        session.add(StagedUpload(prefix=prefix, owner=worker_name(), started_at=utcnow()))


def unstage(session: Session, prefix: str) -> bool:
    """The objects under ``prefix`` now belong to committed rows (in the caller's transaction).
    False when there was no record: the sweep took it (and may have deleted the objects)."""
    return session.execute(delete(StagedUpload).where(StagedUpload.prefix == prefix)).rowcount > 0


def discard(sessions: sessionmaker[Session], store: ObjectStore, prefix: str) -> None:
    """Delete the objects of a failed registration, then its record; if the store cannot take it
    now, leave the record abandoned for ``sweep``. Never raises: the registration's own error is
    the one the caller reports."""
    try:
        store.delete_prefix(prefix)
    except Exception as err:
        log.warning("could not delete the objects under %s now (%s); they will be deleted later", prefix, err)
        _mark_abandoned(sessions, prefix)
        return
    try:
        with session_scope(sessions) as session:
            unstage(session, prefix)
    except Exception as err:  # the objects are gone; a left-over record is swept harmlessly later
        log.warning("could not clear the staging record of %s: %s", prefix, err)


def sweep(sessions: sessionmaker[Session], store: ObjectStore) -> list[str]:
    """Delete the objects of every left-over record (abandoned, its process gone, or too old) and
    the record; returns the prefixes cleaned. Raises when the store or database is still down."""
    with sessions() as session:
        rows = list(session.scalars(select(StagedUpload).where(or_(
            StagedUpload.abandoned_at.is_not(None), StagedUpload.started_at < utcnow() - MAX_UPLOAD_AGE))))
        rows += [r for r in session.scalars(select(StagedUpload).where(StagedUpload.abandoned_at.is_(None)))
                 if local_process_alive(r.owner) is False and r not in rows]
    cleaned = []
    for row in rows:
        store.delete_prefix(row.prefix)
        with session_scope(sessions) as session:
            unstage(session, row.prefix)
        cleaned.append(row.prefix)
    if cleaned:
        log.info("deleted the objects of %d failed upload(s): %s", len(cleaned), ", ".join(cleaned))
    return cleaned


def _mark_abandoned(sessions: sessionmaker[Session], prefix: str) -> None:
    try:
        with session_scope(sessions) as session:
            row = session.get(StagedUpload, prefix)
            if row is not None:
                row.abandoned_at = utcnow()
    except Exception as err:  # the database is down too: the record stays, swept when its age says so
        log.warning("could not mark the upload %s abandoned: %s", prefix, err)
