"""API keys on a real database (both flavours): hashing, authentication, revocation, bootstrap."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from services.auth import (
    AuthError,
    KeyNotFound,
    LastAdminKey,
    authenticate,
    bootstrap_keys,
    create_key,
    hash_key,
    keys_file,
    list_keys,
    revoke_key,
    scopes_of,
)
from services.db.base import utcnow
from services.db.session import make_engine, make_session_factory, session_scope

INJECTED_ADMIN = "strata_injected-admin-key-0123456789abcdef"
INJECTED_INFER = "operator-chosen-inference-key-0123456789"


@pytest.fixture
def sessions(prepared) -> Iterator[sessionmaker]:
    engine = make_engine(prepared)
    yield make_session_factory(engine)
    engine.dispose()


def read_keys_file(settings) -> dict[str, str]:
    lines = keys_file(settings).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


def all_stored_text(sessions) -> str:
    """Every value of every api_keys row, as text."""
    with sessions() as s:
        rows = s.execute(text("SELECT * FROM api_keys")).all()
    return " ".join(str(v) for row in rows for v in row)


def test_keys_are_stored_as_hashes_only(sessions):
    with session_scope(sessions) as s:
        key, plaintext = create_key(s, "ci", ["infer", "admin", "infer"])
    assert plaintext.startswith("strata_") and len(plaintext) > 40
    assert scopes_of(key) == ["admin", "infer"]
    assert key.key_hash == hash_key(plaintext) and plaintext.startswith(key.prefix) and len(key.prefix) == 12
    stored = all_stored_text(sessions)
    assert plaintext not in stored and plaintext[12:20] not in stored


def test_authenticate_accepts_the_key_and_refuses_others(sessions):
    with session_scope(sessions) as s:
        key, plaintext = create_key(s, "reader", ["infer"])
    with session_scope(sessions) as s:
        assert authenticate(s, plaintext).id == key.id
        assert authenticate(s, plaintext + "x") is None
        assert authenticate(s, "") is None
        assert authenticate(s, key.key_hash) is None  # the hash is not a key


def test_last_used_is_written_at_most_once_a_minute(sessions):
    with session_scope(sessions) as s:
        key, plaintext = create_key(s, "reader", ["infer"])
    t0 = utcnow()
    with session_scope(sessions) as s:
        assert authenticate(s, plaintext, now=t0).last_used_at == t0
    with session_scope(sessions) as s:
        assert authenticate(s, plaintext, now=t0 + timedelta(seconds=30)).last_used_at == t0
    with session_scope(sessions) as s:
        later = t0 + timedelta(seconds=61)
        assert authenticate(s, plaintext, now=later).last_used_at == later


def test_revoked_keys_fail_and_the_last_admin_key_stays(sessions):
    with session_scope(sessions) as s:
        for k in list_keys(s):  # embedded bootstrap made some: start from none active
            k.revoked_at = utcnow()
        admin, admin_plain = create_key(s, "admin", ["admin"])
        infer, infer_plain = create_key(s, "infer", ["infer"])
    with session_scope(sessions) as s:
        revoke_key(s, infer.id)
        with pytest.raises(LastAdminKey, match="last active admin key"):
            revoke_key(s, admin.id)
        with pytest.raises(KeyNotFound, match="no API key with id 999"):
            revoke_key(s, 999)
    with session_scope(sessions) as s:
        assert authenticate(s, infer_plain) is None
        assert authenticate(s, admin_plain) is not None
        assert revoke_key(s, infer.id).revoked_at is not None  # idempotent


@pytest.mark.parametrize("scopes, message", [([], "at least one scope"), (["root"], "unknown scope")])
def test_bad_scopes_are_named(sessions, scopes, message):
    with sessions() as s, pytest.raises(AuthError, match=message):
        create_key(s, "x", scopes)


def test_bootstrap_generates_once_in_embedded_mode_and_reuses(embedded_settings, capsys):
    from services.cli.run import prepare

    prepare(embedded_settings)  # the first start
    message = capsys.readouterr().out
    path = keys_file(embedded_settings)
    assert str(path) in message and "generated the first" in message
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    generated = read_keys_file(embedded_settings)
    assert set(generated) == {"STRATA_ADMIN_KEY", "STRATA_INFER_KEY"}
    assert all(key not in message for key in generated.values())
    engine = make_engine(embedded_settings)
    sessions = make_session_factory(engine)
    try:
        with session_scope(sessions) as s:
            assert scopes_of(authenticate(s, generated["STRATA_ADMIN_KEY"])) == ["admin"]
            assert scopes_of(authenticate(s, generated["STRATA_INFER_KEY"])) == ["infer"]
            count = len(list_keys(s))
        prepare(embedded_settings)  # a later start: nothing new, the file stays as it was
        again = capsys.readouterr().out
        assert "generated the first" not in again and str(path) in again
        assert read_keys_file(embedded_settings) == generated
        with sessions() as s:
            assert len(list_keys(s)) == count
    finally:
        engine.dispose()


def test_injected_keys_are_registered_in_any_mode(prepared, sessions):
    injected = prepared.model_copy(update={"admin_key": INJECTED_ADMIN, "infer_key": INJECTED_INFER})
    for _ in range(2):  # idempotent
        with session_scope(sessions) as s:
            message = bootstrap_keys(injected, s)
            assert message is None or INJECTED_ADMIN not in message
    with session_scope(sessions) as s:
        assert scopes_of(authenticate(s, INJECTED_ADMIN)) == ["admin"]
        key = authenticate(s, INJECTED_INFER)
        assert scopes_of(key) == ["infer"] and key.prefix == "oper" and key.name == "STRATA_INFER_KEY"
        assert sum(k.name == "STRATA_ADMIN_KEY" for k in list_keys(s)) == 1
    assert INJECTED_ADMIN not in all_stored_text(sessions)


def test_server_mode_never_writes_keys_and_asks_for_an_admin_key(server_settings, capsys):
    from services.cli.run import prepare

    prepare(server_settings)
    assert "set STRATA_ADMIN_KEY" in capsys.readouterr().out
    assert not keys_file(server_settings).exists()


def test_embedded_generates_only_the_scope_not_injected(embedded_settings):
    from services.cli.run import prepare

    prepare(embedded_settings.model_copy(update={"admin_key": INJECTED_ADMIN}))
    assert set(read_keys_file(embedded_settings)) == {"STRATA_INFER_KEY"}


@pytest.mark.parametrize("update, message", [
    ({"admin_key": "short"}, "STRATA_ADMIN_KEY is too short"),
    ({"admin_key": INJECTED_ADMIN, "infer_key": INJECTED_ADMIN}, "must differ"),
])
def test_unsafe_injected_keys_are_refused(prepared, sessions, update, message):
    with sessions() as s, pytest.raises(AuthError, match=message):
        bootstrap_keys(prepared.model_copy(update=update), s)
