"""Movable names of a model's versions: ``production`` (what /segment serves by default),
``latest`` (moved by the service to every new version) and names people choose (``candidate``,
``staging``, ...), moved explicitly.

Promotion moves ``production``; a rollback is a promotion of an older version. Alias names are
unique within their model. Every move is announced to the webhooks that want it (``alias.moved``,
in the same transaction; a "move" to where the alias already points is none). The caller commits.
"""

from __future__ import annotations

import re
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import Alias, ModelVersion
from services.errors import Conflict, InvalidInput
from services.registry.errors import VersionNotFound
from services.webhooks import events

PRODUCTION = "production"
LATEST = "latest"
# A letter first, so an alias can never be read as a version number in ``/versions/{v}``.
ALIAS_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
_ALIAS = re.compile(ALIAS_PATTERN)


class InvalidAlias(InvalidInput):
    """An alias name that is not allowed."""


class AliasConflict(Conflict):
    """The alias cannot be moved or removed this way (``latest`` is the service's, ``production``
    cannot be removed)."""


def check_alias_name(name: str) -> str:
    if not isinstance(name, str) or not _ALIAS.fullmatch(name):
        raise InvalidAlias(f"alias {name!r} is not valid: 1 to 64 lower-case letters, digits, '_' or '-', "
                           "starting with a letter")
    return name


def get_alias(session: Session, model_id: int, name: str, *, for_update: bool = False) -> int | None:
    """The version an alias points at, or None when the alias is not set.

    for_update: lock the row until the transaction ends (Postgres), for a read that decides a
    write, so a promotion committed in between is not silently overwritten."""
    row = session.get(Alias, (model_id, name), with_for_update=for_update)
    return row.version if row else None


def set_alias(session: Session, model_id: int, name: str, version: int, *, automatic: bool = True) -> int | None:
    """Point ``name`` at ``version``; return the version it pointed at before (None if unset).
    ``automatic``: the service moves it (``latest``, the promotion policy); a person's move is
    ``move_alias``'s."""
    if session.get(ModelVersion, (model_id, version)) is None:
        raise VersionNotFound(f"model version {version} does not exist")
    row = session.get(Alias, (model_id, name))
    previous = row.version if row is not None else None
    if row is None:
        session.add(Alias(model_id=model_id, name=name, version=version, updated_at=utcnow()))
        session.flush()
    else:
        row.version, row.updated_at = version, utcnow()
    events.alias_event(session, model_id, name, previous, version, automatic=automatic)
    return previous


def move_alias(session: Session, model_id: int, name: str, version: int) -> int | None:
    """A person moves an alias (``production`` included: a promotion or a rollback)."""
    check_alias_name(name)
    if name == LATEST:
        raise AliasConflict(f"{LATEST!r} always names the newest version and is moved by the service only; "
                            "choose another alias name")
    return set_alias(session, model_id, name, version, automatic=False)


def remove_alias(session: Session, model_id: int, name: str) -> int:
    """Remove a person's alias; returns the version it named. ``production`` and ``latest`` stay."""
    if name in (PRODUCTION, LATEST):
        raise AliasConflict(f"{name!r} cannot be removed: move it to another version instead")
    row = session.get(Alias, (model_id, check_alias_name(name)))
    if row is None:
        raise VersionNotFound(f"alias {name!r} is not set")
    session.delete(row)
    return row.version


def promote(session: Session, model_id: int, version: int) -> int | None:
    """Make ``version`` production; return the previous production version."""
    return set_alias(session, model_id, PRODUCTION, version)


def production_version(session: Session, model_id: int) -> int | None:
    return get_alias(session, model_id, PRODUCTION)


def production_versions(session: Session) -> dict[int, int]:
    """{model id: its production version} for every model that has one."""
    return dict(session.execute(select(Alias.model_id, Alias.version).where(Alias.name == PRODUCTION)).all())


def list_aliases(session: Session, model_id: int) -> list[Alias]:
    return list(session.scalars(select(Alias).where(Alias.model_id == model_id).order_by(Alias.name)))


def aliases_by_version(session: Session, model_id: int) -> dict[int, list[str]]:
    """{version: its alias names, sorted} for every version of the model that has one."""
    out: dict[int, list[str]] = defaultdict(list)
    for row in list_aliases(session, model_id):
        out[row.version].append(row.name)
    return dict(out)
