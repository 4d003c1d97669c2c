"""Bearer keys, scopes and model limits through the real app (both flavours), and the /keys resource."""

from __future__ import annotations

import pytest

from services.auth import create_key
from services.db.session import session_scope
from services.registry.models import get_models


def make_key(client, scopes: list[str], name: str = "test key", models: list[str] | None = None) -> str:
    """A key created straight in the app's database (as an operator's first key would be), for
    every model or limited to ``models`` (by name)."""
    with session_scope(client.app.state.strata.sessions) as s:
        rows = None if models is None else get_models(s, models)
        _, plaintext = create_key(s, name, scopes, rows)
    return plaintext


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(client) -> dict[str, dict[str, str]]:
    return {scope: bearer(make_key(client, [scope], scope)) for scope in ("admin", "infer", "read")}


@pytest.fixture
def model_m(client, keys) -> None:
    assert client.post("/models", json={"name": "m"}, headers=keys["admin"]).status_code == 201


def image_part() -> dict:
    from tests.api.test_models import upload

    return {"image": upload(1, n=1)[0][1]}


EVERY = ("admin", "infer", "read")
# (method, path, the scopes that suffice, JSON body)
ROUTES = [
    ("GET", "/models", EVERY, None),
    ("GET", "/models/m", EVERY, None),
    ("GET", "/models/m/versions", EVERY, None),
    ("GET", "/models/m/versions/1", EVERY, None),
    ("GET", "/models/m/aliases", EVERY, None),
    ("GET", "/models/m/classes", EVERY, None),
    ("GET", "/models/m/tasks", EVERY, None),
    ("GET", "/tasks", EVERY, None),
    ("GET", "/tasks/nope", EVERY, None),
    ("GET", "/workers", EVERY, None),
    ("POST", "/models/m/segment", ("infer",), None),
    ("POST", "/models", ("admin",), {"name": "x"}),
    ("PATCH", "/models/m", ("admin",), {"description": "x"}),
    ("POST", "/models/m/tasks", ("admin",), None),
    ("PUT", "/models/m/aliases/candidate", ("admin",), {"version": 1}),
    ("DELETE", "/models/m/aliases/candidate", ("admin",), None),
    ("DELETE", "/models/m/versions/1", ("admin",), None),
    ("POST", "/tasks/nope/cancel", ("admin",), None),
    ("POST", "/workers/ping", ("admin",), None),
    ("GET", "/keys", ("admin",), None),
    ("POST", "/keys", ("admin",), {"name": "k", "scopes": ["read"]}),
    ("DELETE", "/models/m", ("admin",), None),
]


@pytest.mark.parametrize("method, path, allowed, body", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_scope_matrix(client, keys, model_m, method, path, allowed, body):
    anonymous = client.request(method, path, json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "Authorization" in anonymous.json()["detail"]
    for who in ("read", "infer", "admin"):  # admin last: its request may delete the model
        r = client.request(method, path, headers=keys[who], json=body)
        if who in allowed:
            assert r.status_code not in (401, 403), (who, r.text)
        else:
            assert r.status_code == 403, (who, r.text)
            assert f"scope '{allowed[0]}'" in r.json()["detail"] and f"['{who}']" in r.json()["detail"]


@pytest.mark.parametrize("header, message", [
    ("Token abc", "malformed"),
    ("Bearer", "malformed"),
    ("Bearer strata_not-a-real-key", "invalid or revoked"),
])
def test_bad_credentials_are_401_with_the_reason(client, header, message):
    r = client.get("/models", headers={"Authorization": header})
    assert r.status_code == 401 and message in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_open_endpoints_need_no_key(client):
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_openapi_declares_bearer_auth(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/models"]["get"]["security"]
    assert spec["paths"]["/models/{name}/aliases/{alias}"]["put"]["security"]


# --- keys limited to some models ---------------------------------------------------------------------
def test_a_read_key_reads_and_does_nothing_else(client, keys, model_m):
    from tests.api.test_models import register, upload

    task = register(client, keys["admin"], "m", ["car"])
    read = keys["read"]
    assert client.get("/models/m", headers=read).status_code == 200
    assert client.get(f"/tasks/{task['id']}", headers=read).json()["id"] == task["id"]
    assert [t["id"] for t in client.get("/tasks", headers=read).json()] == [task["id"]]
    r = client.post("/models/m/tasks", data={"spec": '{"classes": ["bus"]}'}, files=upload(1), headers=read)
    assert r.status_code == 403 and "scope 'admin'" in r.json()["detail"]
    r = client.post("/models/m/segment", files=image_part(), headers=read)
    assert r.status_code == 403 and "scope 'infer'" in r.json()["detail"]
    assert client.post(f"/tasks/{task['id']}/cancel", headers=read).status_code == 403
    assert client.get("/models/m/tasks", headers=keys["admin"]).json()[0]["status"] == "queued"


def model_routes(name: str) -> list[tuple[str, str, dict, int]]:
    """Every route of a model, with a request and its status for a key that may use the model
    (after ``trained``: v1 in production, no task pending)."""
    from tests.api.test_models import upload

    return [
        ("GET", f"/models/{name}", {}, 200),
        ("GET", f"/models/{name}/versions", {}, 200),
        ("GET", f"/models/{name}/versions/1", {}, 200),
        ("GET", f"/models/{name}/aliases", {}, 200),
        ("GET", f"/models/{name}/classes", {}, 200),
        ("GET", f"/models/{name}/tasks", {}, 200),
        ("POST", f"/models/{name}/segment", {"files": image_part()}, 200),
        ("PUT", f"/models/{name}/aliases/candidate", {"json": {"version": 1}}, 200),
        ("DELETE", f"/models/{name}/aliases/candidate", {}, 204),
        ("PATCH", f"/models/{name}", {"json": {"description": "mine"}}, 200),
        ("DELETE", f"/models/{name}/versions/1", {}, 409),  # production
        ("POST", f"/models/{name}/tasks", {"data": {"spec": '{"classes": ["bus"]}'}, "files": upload(1)}, 202),
        ("DELETE", f"/models/{name}", {}, 409),  # a task is queued now
    ]


def test_a_key_limited_to_a_model_cannot_reach_another(client, keys):
    from tests.api.test_models import trained

    admin = keys["admin"]
    for name in ("a", "b"):
        assert client.post("/models", json={"name": name}, headers=admin).status_code == 201
        assert trained(client, admin, name, ["car"]) == 1
    tasks = {name: client.get(f"/models/{name}/tasks", headers=admin).json()[0]["id"] for name in ("a", "b")}
    a_only = bearer(make_key(client, ["admin", "infer"], "a only", models=["a"]))

    for method, path, kw, _ in model_routes("b"):
        r = client.request(method, path, headers=a_only, **kw)
        assert r.status_code == 403, (method, path, r.text)
        assert "is not allowed to use model 'b'" in r.json()["detail"]
    for method, path in (("GET", f"/tasks/{tasks['b']}"), ("POST", f"/tasks/{tasks['b']}/cancel")):
        r = client.request(method, path, headers=a_only)
        assert r.status_code == 403 and "'b'" in r.json()["detail"], (method, path, r.text)
    b = client.get("/models/b", headers=admin).json()
    assert (b["description"], b["versions"], b["pending_tasks"]) == ("", 1, 0)  # nothing happened to b
    assert [a["name"] for a in client.get("/models/b/aliases", headers=admin).json()] == ["latest", "production"]

    for method, path, kw, expected in model_routes("a"):  # its own model: every route answers on its merits
        r = client.request(method, path, headers=a_only, **kw)
        assert r.status_code == expected, (method, path, r.text)
    assert client.get(f"/tasks/{tasks['a']}", headers=a_only).status_code == 200
    assert [m["name"] for m in client.get("/models", headers=a_only).json()] == ["a"]
    listed = client.get("/tasks", headers=a_only).json()
    assert {t["model"] for t in listed} == {"a"} and tasks["a"] in {t["id"] for t in listed}
    assert {t["model"] for t in client.get("/tasks", headers=admin).json()} == {"a", "b"}


def test_a_limited_admin_key_manages_its_model_but_not_keys_or_models(client, keys, model_m):
    m_admin = bearer(make_key(client, ["admin"], "m admin", models=["m"]))
    assert client.patch("/models/m", json={"description": "mine"}, headers=m_admin).status_code == 200
    for method, path, body in (("GET", "/keys", None), ("POST", "/keys", {"name": "wider", "scopes": ["admin"]}),
                               ("DELETE", "/keys/1", None), ("POST", "/models", {"name": "n"})):
        r = client.request(method, path, headers=m_admin, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert "needs a key for every model" in r.json()["detail"] and "limited to some models" in r.json()["detail"]
    assert [m["name"] for m in client.get("/models", headers=keys["admin"]).json()] == ["m"]
    assert all(k["revoked_at"] is None for k in client.get("/keys", headers=keys["admin"]).json())


def test_keys_limited_to_models_through_the_api(client, keys, model_m):
    admin = keys["admin"]
    assert client.post("/models", json={"name": "other"}, headers=admin).status_code == 201
    r = client.post("/keys", json={"name": "cam", "scopes": ["infer"], "models": ["m"]}, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["models"] == ["m"] and created["scopes"] == ["infer"]
    cam = bearer(created["key"])
    assert client.get("/models/m", headers=cam).status_code == 200
    assert client.get("/models/other", headers=cam).status_code == 403
    listing = {k["id"]: k for k in client.get("/keys", headers=admin).json()}
    assert listing[created["id"]]["models"] == ["m"]
    assert all(k["models"] is None for i, k in listing.items() if i != created["id"])

    r = client.post("/keys", json={"name": "x", "scopes": ["read"], "models": ["m", "nope"]}, headers=admin)
    assert r.status_code == 404 and "no model named 'nope'" in r.json()["detail"]
    r = client.post("/keys", json={"name": "x", "scopes": ["read"], "models": []}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"].startswith("body.models")
    assert len(client.get("/keys", headers=admin).json()) == len(listing)  # the refused ones were not made


def test_key_lifecycle_through_the_api(client, keys):
    r = client.post("/keys", json={"name": "labelling tool", "scopes": ["infer"]}, headers=keys["admin"])
    assert r.status_code == 201, r.text
    created = r.json()
    plaintext = created["key"]
    assert plaintext.startswith(created["prefix"]) and created["scopes"] == ["infer"] and created["models"] is None
    assert client.get("/models", headers=bearer(plaintext)).status_code == 200

    listing = client.get("/keys", headers=keys["admin"])
    assert plaintext not in listing.text and "hash" not in listing.text
    mine = next(k for k in listing.json() if k["id"] == created["id"])
    assert mine["name"] == "labelling tool" and mine["last_used_at"] is not None and "key" not in mine

    r = client.delete(f"/keys/{created['id']}", headers=keys["admin"])
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = client.get("/models", headers=bearer(plaintext))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert client.delete("/keys/9999", headers=keys["admin"]).status_code == 404


@pytest.mark.parametrize("body", [
    {"name": "x", "scopes": []}, {"name": "x", "scopes": ["root"]}, {"scopes": ["admin"]},
    {"name": "x", "scopes": ["read"], "models": "m"}, {"name": "x", "scopes": ["read"], "everything": True},
    {"name": "nul\x00", "scopes": ["read"]}, {"name": "x", "scopes": ["read"], "models": ["m\x00"]}])
def test_bad_key_requests_are_422(client, keys, body):
    r = client.post("/keys", json=body, headers=keys["admin"])
    assert r.status_code == 422, r.text


def test_the_last_admin_key_cannot_be_revoked(client, keys, model_m):
    """... the last admin key for every model: a limited admin key does not count."""
    me = next(k for k in client.get("/keys", headers=keys["admin"]).json() if k["name"] == "admin")
    for k in client.get("/keys", headers=keys["admin"]).json():
        if "admin" in k["scopes"] and k["id"] != me["id"]:
            assert client.delete(f"/keys/{k['id']}", headers=keys["admin"]).status_code == 200
    limited = client.post("/keys", json={"name": "m admin", "scopes": ["admin"], "models": ["m"]},
                          headers=keys["admin"]).json()
    r = client.delete(f"/keys/{me['id']}", headers=keys["admin"])
    assert r.status_code == 409 and "last active admin key" in r.json()["detail"]
    assert client.delete(f"/keys/{limited['id']}", headers=keys["admin"]).status_code == 200
    r = client.delete(f"/keys/{me['id']}", headers=keys["admin"])
    assert r.status_code == 409 and "last active admin key" in r.json()["detail"]
    assert client.get("/keys", headers=keys["admin"]).status_code == 200


def test_a_key_revoked_elsewhere_stops_within_the_auth_cache_ttl(prepared):
    """STRATA_AUTH_CACHE_S: a checked key is not looked up again for that long, so a key revoked by
    another API process (here: straight in the database) still works until then, and no longer."""
    import time

    from fastapi.testclient import TestClient

    from api.main import create_app
    from services.auth import hash_key
    from services.db.base import utcnow
    from services.db.models import ApiKey

    ttl = 1.5
    with TestClient(create_app(prepared.model_copy(update={"auth_cache_s": ttl}))) as client:
        plaintext = make_key(client, ["read"])
        assert client.get("/models", headers=bearer(plaintext)).status_code == 200
        checked = time.monotonic()
        with session_scope(client.app.state.strata.sessions) as s:
            s.query(ApiKey).filter_by(key_hash=hash_key(plaintext)).one().revoked_at = utcnow()
        still = client.get("/models", headers=bearer(plaintext))
        if time.monotonic() - checked < ttl:  # answered from the cache (a slow machine may be past it)
            assert still.status_code == 200
        time.sleep(max(0.0, ttl - (time.monotonic() - checked)) + 0.05)
        r = client.get("/models", headers=bearer(plaintext))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_a_key_revoked_through_the_api_stops_at_once_despite_the_cache(prepared):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(prepared.model_copy(update={"auth_cache_s": 300}))) as client:
        admin = bearer(make_key(client, ["admin"], "admin"))
        r = client.post("/keys", json={"name": "tool", "scopes": ["read"]}, headers=admin)
        created = r.json()
        assert client.get("/models", headers=bearer(created["key"])).status_code == 200  # now in the cache
        assert client.delete(f"/keys/{created['id']}", headers=admin).status_code == 200
        assert client.get("/models", headers=bearer(created["key"])).status_code == 401
