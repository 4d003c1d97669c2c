"""API keys: creation, authentication, revocation and the first keys of a deployment.

A key is ``strata_`` + 43 url-safe characters from ``secrets`` (256 random bits). Only its
sha256 is stored. A slow password hash (bcrypt, scrypt) exists to stop brute force of
low-entropy secrets that people choose; a 256-bit random key cannot be brute-forced, so one
sha256 is enough and keeps authentication at microseconds per request. For the same reason keys
injected through ``STRATA_ADMIN_KEY`` / ``STRATA_INFER_KEY`` must be at least
``MIN_INJECTED_KEY_CHARS`` long. Lookup is by hash (a unique index), so no comparison of secrets
happens in Python and there is no timing side channel worth closing.

Keys are never logged: messages name a key by its id, name and ``prefix`` (the first characters,
which identify a key without revealing enough of it to matter).

Scopes: ``admin`` (tasks, aliases, models, keys), ``infer`` (segmentation, and reading), ``read``
(reading only). A key works on every model, or on the models it is limited to: a key limited to
some models can never reach another one, and only an admin key for every model manages keys and
creates models (a limited admin could otherwise mint itself a wider key).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.config import Settings
from services.db.base import utcnow
from services.db.models import ApiKey, Model
from services.errors import Conflict, InvalidInput, NotFound
from services.text import NAME_RULE, hidden_character

ADMIN, INFER, READ = "admin", "infer", "read"
SCOPES = (ADMIN, INFER, READ)
READ_SCOPES = SCOPES  # every scope may read what its models hold
KEY_PREFIX = "strata_"
PREFIX_RANDOM_CHARS = 5  # random characters kept in ``ApiKey.prefix``: 30 of 256 bits
MIN_INJECTED_KEY_CHARS = 32
LAST_USED_RESOLUTION = timedelta(minutes=1)  # at most one write per key and minute
KEYS_FILE_NAME = "api-keys.txt"
# scope -> the environment variable that may inject a key with that scope
INJECTED = {"admin": "STRATA_ADMIN_KEY", "infer": "STRATA_INFER_KEY"}
# The scopes of the keys generated at an embedded first start. The operator's admin key also
# segments, so that the dashboard's "see it segment" view works with the one key pasted into it
# (an admin can replace what is served anyway; infer adds no power to it).
GENERATED_SCOPES = {"admin": (ADMIN, INFER), "infer": (INFER,)}


class AuthError(InvalidInput):
    """A key operation was asked with bad input; the message says what is wrong."""


class KeyNotFound(NotFound):
    """No API key with that id."""


class LastAdminKey(Conflict):
    """Revoking this key would leave no active admin key (nobody could manage keys any more)."""


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def display_prefix(plaintext: str) -> str:
    """The part of a key shown in listings: ``strata_`` + 5 characters, or 4 of a foreign key."""
    if plaintext.startswith(KEY_PREFIX):
        return plaintext[: len(KEY_PREFIX) + PREFIX_RANDOM_CHARS]
    return plaintext[:4]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def normalise_scopes(scopes: Iterable[str]) -> list[str]:
    """Sorted, unique, known scopes; AuthError naming any unknown one or an empty list."""
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise AuthError(f"unknown scope(s) {unknown}: a key's scopes are among {list(SCOPES)}")
    if not chosen:
        raise AuthError(f"a key needs at least one scope among {list(SCOPES)}")
    return chosen


def scopes_of(key: ApiKey) -> list[str]:
    return key.scopes.split()


def models_of(key: ApiKey) -> list[str] | None:
    """The names of the models a key is limited to; None: every model."""
    return None if key.all_models else [m.name for m in key.models]


@dataclass(frozen=True)
class Caller:
    """An authenticated key, detached from the database: what a request may do."""

    key_id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    model_ids: frozenset[int] | None  # None: every model

    @classmethod
    def of(cls, key: ApiKey) -> "Caller":
        ids = None if key.all_models else frozenset(m.id for m in key.models)
        return cls(key.id, key.name, key.prefix, tuple(scopes_of(key)), ids)

    @property
    def label(self) -> str:
        return f"key {self.prefix}... ({self.name!r})"

    def has_any(self, scopes: Iterable[str]) -> bool:
        return bool(set(self.scopes) & set(scopes))

    def may_use(self, model_id: int) -> bool:
        return self.model_ids is None or model_id in self.model_ids


def _insert(session: Session, name: str, scopes: Iterable[str], plaintext: str,
            models: Sequence[Model] | None = None) -> ApiKey:
    name = name.strip()
    if not name or len(name) > 128:
        raise AuthError("a key's name must be 1 to 128 characters")
    hidden = hidden_character(name)
    if hidden:
        raise AuthError(f"name: a key's name cannot hold {hidden}: {NAME_RULE}")
    if models is not None and not models:
        raise AuthError("models: a key limited to models needs at least one (leave `models` out for every model)")
    row = ApiKey(name=name, prefix=display_prefix(plaintext), key_hash=hash_key(plaintext),
                 scopes=" ".join(normalise_scopes(scopes)), created_at=utcnow(),
                 all_models=models is None, models=list(models or []))
    session.add(row)
    session.flush()
    return row


def create_key(session: Session, name: str, scopes: Iterable[str],
               models: Sequence[Model] | None = None) -> tuple[ApiKey, str]:
    """A new key, for every model or only ``models``; the plaintext is returned here and nowhere
    else. The caller commits."""
    plaintext = generate_key()
    return _insert(session, name, scopes, plaintext, models), plaintext


def authenticate(session: Session, plaintext: str, *, now: datetime | None = None) -> ApiKey | None:
    """The active key with this plaintext, or None. Refreshes ``last_used_at`` at most once a
    minute (so reads do not turn into a write per request); the caller commits."""
    if not plaintext:
        return None
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext))).one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    now = now or utcnow()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        key.last_used_at = now
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, key_id: int) -> ApiKey:
    """Revoke a key (idempotent). Refuses to revoke the last active admin key."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise KeyNotFound(f"no API key with id {key_id}")
    if key.revoked_at is not None:
        return key
    if key.all_models and ADMIN in scopes_of(key) and _active_admin_count(session) <= 1:
        raise LastAdminKey(
            f"key {key.id} ({key.name!r}, {key.prefix}...) is the last active admin key: "
            "create another admin key before revoking it"
        )
    key.revoked_at = utcnow()
    return key


def _active_admin_count(session: Session) -> int:
    """Active admin keys for every model (those that can manage keys)."""
    active = session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None), ApiKey.all_models.is_(True)))
    return sum(ADMIN in scopes_of(k) for k in active)


# --- the first keys of a deployment ---------------------------------------------------------
def keys_file(settings: Settings) -> Path:
    return (settings.data_dir / KEYS_FILE_NAME).resolve()


def bootstrap_keys(settings: Settings, session: Session) -> str | None:
    """Make sure the deployment has its first keys; return a one-off message for the operator.

    ``STRATA_ADMIN_KEY`` / ``STRATA_INFER_KEY``, when set (any mode), are registered unless their
    hash is already stored. In embedded mode, a scope that has never had any key gets a generated
    one at this first start; generated keys go to ``{data_dir}/api-keys.txt`` (mode 0600) and the
    message says where, never what they are. The caller commits after this returns (the file is
    written first, so a stored key is never lost).
    """
    injected = _injected_keys(settings)
    notes = [_register_injected(session, scope, plaintext) for scope, plaintext in injected.items()]
    generated: dict[str, str] = {}
    if settings.embedded:
        # admin and infer; read keys are made by hand. Decided first: the admin key generated here
        # has infer too, and must not stand in for the infer key a camera or client should get.
        missing = [scope for scope in INJECTED if not _scope_ever_had_a_key(session, scope)]
        for scope in missing:
            _, generated[scope] = create_key(session, f"generated {scope} key", GENERATED_SCOPES[scope])
    if generated:
        _write_keys_file(keys_file(settings), generated)
        notes.append(f"generated the first API keys ({', '.join(generated)}); they are in "
                     f"{keys_file(settings)} (readable by you only) and are printed nowhere else")
    elif settings.embedded and keys_file(settings).exists():
        notes.append(f"API keys generated at the first start are in {keys_file(settings)}")
    if not settings.embedded and not injected.get("admin") and not _scope_ever_had_a_key(session, "admin"):
        notes.append("no admin API key exists: set STRATA_ADMIN_KEY (32+ random characters) and restart")
    notes = [n for n in notes if n]
    return "strata: " + "; ".join(notes) if notes else None


def _injected_keys(settings: Settings) -> dict[str, str]:
    values = {"admin": settings.admin_key, "infer": settings.infer_key}
    injected = {scope: v for scope, v in values.items() if v}
    for scope, plaintext in injected.items():
        if len(plaintext) < MIN_INJECTED_KEY_CHARS:
            raise AuthError(
                f"{INJECTED[scope]} is too short ({len(plaintext)} characters): use at least "
                f"{MIN_INJECTED_KEY_CHARS} random characters, e.g. the output of "
                "python -c \"import secrets; print('strata_' + secrets.token_urlsafe(32))\""
            )
    if len(injected) == 2 and injected["admin"] == injected["infer"]:
        raise AuthError("STRATA_ADMIN_KEY and STRATA_INFER_KEY must differ")
    return injected


def _register_injected(session: Session, scope: str, plaintext: str) -> str | None:
    existing = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext))).one_or_none()
    if existing is None:
        _insert(session, INJECTED[scope], [scope], plaintext)
        return None
    if existing.revoked_at is not None:
        return f"{INJECTED[scope]} was revoked (key {existing.id}) and stays revoked: it will not authenticate"
    return None


def _scope_ever_had_a_key(session: Session, scope: str) -> bool:
    return any(scope in scopes_of(k) for k in session.scalars(select(ApiKey)))


def _write_keys_file(path: Path, generated: dict[str, str]) -> None:
    """Write (replacing) the keys file atomically, created with mode 0600 from the start."""
    header = ["# Strata API keys generated by `strata` at first start. Only their hashes are stored:",
              "# keep this file private; send a key as 'Authorization: Bearer <key>'."]
    new_vars = {INJECTED[scope] for scope in generated}
    # Keep keys an earlier start wrote for other scopes: losing the only copy would lock users out.
    kept = [line for line in _read_lines(path) if "=" in line and line.split("=", 1)[0] not in new_vars]
    lines = header + kept + [f"{INJECTED[scope]}={plaintext}" for scope, plaintext in generated.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)  # in case the file pre-existed with wider permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    except FileNotFoundError:
        return []
