"""Movable names for versions: ``production`` (what /segment serves) and ``latest``.

Promotion moves ``production``; a rollback is a promotion of an older version. The caller
commits.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import Alias, ModelVersion
from services.registry.errors import VersionNotFound

PRODUCTION = "production"
LATEST = "latest"


def get_alias(session: Session, name: str, *, for_update: bool = False) -> int | None:
    """The version an alias points at, or None when the alias is not set.

    for_update: lock the row until the transaction ends (Postgres), for a read that decides a
    write, so a promotion committed in between is not silently overwritten."""
    row = session.get(Alias, name, with_for_update=for_update)
    return row.version if row else None


def set_alias(session: Session, name: str, version: int) -> int | None:
    """Point ``name`` at ``version``; return the version it pointed at before (None if unset)."""
    if session.get(ModelVersion, version) is None:
        raise VersionNotFound(f"model version {version} does not exist")
    row = session.get(Alias, name)
    if row is None:
        session.add(Alias(name=name, version=version, updated_at=utcnow()))
        session.flush()
        return None
    previous, row.version, row.updated_at = row.version, version, utcnow()
    return previous


def promote(session: Session, version: int) -> int | None:
    """Make ``version`` production; return the previous production version."""
    return set_alias(session, PRODUCTION, version)


def production_version(session: Session) -> int | None:
    return get_alias(session, PRODUCTION)


def aliases_by_version(session: Session) -> dict[int, list[str]]:
    """{version: its alias names, sorted} for every version that has one."""
    out: dict[int, list[str]] = defaultdict(list)
    for row in session.scalars(select(Alias).order_by(Alias.name)):
        out[row.version].append(row.name)
    return dict(out)
