"""Bearer keys and scopes through the real app (both flavours), and the /keys resource."""

from __future__ import annotations

import pytest

from services.auth import create_key
from services.db.session import session_scope


def make_key(client, scopes: list[str], name: str = "test key") -> str:
    """A key created straight in the app's database (as an operator's first key would be)."""
    with session_scope(client.app.state.strata.sessions) as s:
        _, plaintext = create_key(s, name, scopes)
    return plaintext


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(client) -> dict[str, dict[str, str]]:
    return {"admin": bearer(make_key(client, ["admin"], "admin")),
            "infer": bearer(make_key(client, ["infer"], "infer"))}


# (method, path, scope that suffices; "reader" = admin or infer)
ROUTES = [
    ("GET", "/models", "reader"),
    ("GET", "/classes", "reader"),
    ("GET", "/workers", "reader"),
    ("POST", "/models/1/promote", "admin"),
    ("POST", "/workers/ping", "admin"),
    ("GET", "/keys", "admin"),
]


@pytest.mark.parametrize("method, path, needed", ROUTES)
def test_scope_matrix(client, keys, method, path, needed):
    anonymous = client.request(method, path)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "Authorization" in anonymous.json()["detail"]
    for who in ("admin", "infer"):
        r = client.request(method, path, headers=keys[who])
        if needed in (who, "reader"):
            assert r.status_code not in (401, 403), (who, r.text)
        else:
            assert r.status_code == 403, (who, r.text)
            assert f"scope '{needed}'" in r.json()["detail"] and "'infer'" in r.json()["detail"]


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


def test_key_lifecycle_through_the_api(client, keys):
    r = client.post("/keys", json={"name": "labelling tool", "scopes": ["infer"]}, headers=keys["admin"])
    assert r.status_code == 201, r.text
    created = r.json()
    plaintext = created["key"]
    assert plaintext.startswith(created["prefix"]) and created["scopes"] == ["infer"]
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
    {"name": "x", "scopes": []}, {"name": "x", "scopes": ["root"]}, {"scopes": ["admin"]}])
def test_bad_key_requests_are_422(client, keys, body):
    r = client.post("/keys", json=body, headers=keys["admin"])
    assert r.status_code == 422, r.text


def test_the_last_admin_key_cannot_be_revoked(client, keys):
    me = next(k for k in client.get("/keys", headers=keys["admin"]).json() if k["name"] == "admin")
    for k in client.get("/keys", headers=keys["admin"]).json():
        if "admin" in k["scopes"] and k["id"] != me["id"]:
            assert client.delete(f"/keys/{k['id']}", headers=keys["admin"]).status_code == 200
    r = client.delete(f"/keys/{me['id']}", headers=keys["admin"])
    assert r.status_code == 409 and "last active admin key" in r.json()["detail"]
