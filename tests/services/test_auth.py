"""API keys on a real database (both flavours): hashing, authentication, scopes, keys limited to
some models, revocation, bootstrap."""

from __future__ import annotations

import stat
from datetime import timedelta

import pytest
from sqlalchemy import text

from services.auth import (
    AuthError,
    Caller,
    KeyNotFound,
    LastAdminKey,
    authenticate,
    bootstrap_keys,
    create_key,
    hash_key,
    keys_file,
    list_keys,
    models_of,
    revoke_key,
    scopes_of,
)
from services.db.base import utcnow
from services.db.models import ApiKey
from services.db.session import make_engine, make_session_factory, session_scope
from services.registry.models import create_model, delete_model, get_model

INJECTED_ADMIN = "strata_injected-admin-key-0123456789abcdef"
INJECTED_INFER = "operator-chosen-inference-key-0123456789"


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
        key, plaintext = create_key(s, "ci", ["infer", "admin", "infer", "read"])
    assert plaintext.startswith("strata_") and len(plaintext) > 40
    assert scopes_of(key) == ["admin", "infer", "read"] and key.all_models
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


def test_keys_for_every_model_and_keys_limited_to_some(sessions):
    with session_scope(sessions) as s:
        a, b, c = (create_model(s, n) for n in ("a", "b", "c"))
        wide, wide_plain = create_key(s, "wide", ["infer"])
        narrow, narrow_plain = create_key(s, "narrow", ["read", "infer"], models=[b, a])
        ids = a.id, b.id, c.id
    with session_scope(sessions) as s:
        wide, narrow = authenticate(s, wide_plain), authenticate(s, narrow_plain)
        assert wide.all_models and models_of(wide) is None
        assert not narrow.all_models and models_of(narrow) == ["a", "b"] and scopes_of(narrow) == ["infer", "read"]
        callers = Caller.of(wide), Caller.of(narrow)
    assert callers[0].model_ids is None and all(callers[0].may_use(i) for i in ids)
    assert callers[1].model_ids == frozenset(ids[:2])
    assert [callers[1].may_use(i) for i in ids] == [True, True, False]
    assert callers[1].has_any(["read"]) and not callers[1].has_any(["admin"])
    assert callers[1].label == f"key {narrow.prefix}... ('narrow')"
    with sessions() as s, pytest.raises(AuthError, match="needs at least one"):
        create_key(s, "none", ["infer"], models=[])


def test_a_key_limited_to_a_deleted_model_reaches_no_model(sessions):
    """The link rows go with the model; the key stays limited (to nothing), never widened."""
    with session_scope(sessions) as s:
        a = create_model(s, "a")
        _, plaintext = create_key(s, "a only", ["infer"], models=[a])
    with session_scope(sessions) as s:
        delete_model(s, get_model(s, "a"), confirm=None)
    with session_scope(sessions) as s:
        caller = Caller.of(authenticate(s, plaintext))
        assert s.execute(text("SELECT count(*) FROM api_key_models")).scalar() == 0
    assert caller.model_ids == frozenset() and not caller.may_use(1)


def test_a_limited_admin_key_does_not_count_as_the_last_admin(sessions):
    with session_scope(sessions) as s:
        for k in list_keys(s):  # embedded bootstrap made some: start from none active
            k.revoked_at = utcnow()
        m = create_model(s, "m")
        admin, _ = create_key(s, "admin", ["admin"])
        limited, _ = create_key(s, "m admin", ["admin"], models=[m])
        limited_too, _ = create_key(s, "m admin 2", ["admin"], models=[m])
    with session_scope(sessions) as s:
        with pytest.raises(LastAdminKey, match="last active admin key"):
            revoke_key(s, admin.id)  # two limited admin keys are no admin for every model
        revoke_key(s, limited.id)  # while limited ones may all go
        revoke_key(s, limited_too.id)
    with session_scope(sessions) as s:
        second, _ = create_key(s, "admin 2", ["admin"])
    with session_scope(sessions) as s:
        revoke_key(s, admin.id)  # another admin for every model remains
        with pytest.raises(LastAdminKey):
            revoke_key(s, second.id)
        assert s.get(ApiKey, second.id).revoked_at is None


@pytest.mark.parametrize("scopes, message", [([], "at least one scope"), (["root"], "unknown scope"),
                                             (["read", "write"], r"unknown scope\(s\) \['write'\]")])
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
            assert scopes_of(authenticate(s, generated["STRATA_ADMIN_KEY"])) == ["admin", "infer"]
            assert scopes_of(authenticate(s, generated["STRATA_INFER_KEY"])) == ["infer"]
            assert all(k.all_models for k in list_keys(s))  # the first keys work on every model
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
