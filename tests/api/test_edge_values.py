"""Path, query and header values at the edges (issue 11, item 3): non-ASCII digits, integers past
the 32-bit columns (PostgreSQL) or past 64 bits (SQLite), NUL bytes (PostgreSQL refuses them in
text) and odd ``?version=`` values are answered 404 or 422 with a message naming the parameter,
never 500. Each runs on both flavours (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.api.test_auth import bearer, make_key

BIG = ["2147483648", "9223372036854775808", "99999999999999999999"]  # 2**31, 2**63, twenty digits


@pytest.fixture
def admin(client) -> dict[str, str]:
    """An admin key for every model that may also segment."""
    return bearer(make_key(client, ["admin", "infer"], "admin"))


def detail(r) -> str:
    assert r.status_code in (404, 422), (r.request.method, r.request.url, r.status_code, r.text)
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    return body["detail"]


@pytest.mark.parametrize("name", ["%C2%B2", "%D9%A3", "%EF%BC%91", "m%00", "%00", "m%0A", "m%E2%80%AE"])
def test_a_model_name_outside_the_rule_is_422_on_every_route(client, admin, lineage, name):
    """A superscript two, an Arabic-Indic three, a fullwidth one (all isdigit()), NUL, a line break,
    a bidi override: path.name says what is wrong, on every route under /models/{name}."""
    for method, url in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/versions"), ("GET", "/versions/1"),
                        ("GET", "/tasks"), ("POST", "/tasks"), ("GET", "/classes"), ("GET", "/aliases"),
                        ("GET", "/scores"), ("GET", "/compare"), ("POST", "/segment"),
                        ("GET", "/versions/1/samples"), ("GET", "/items/1/image")):
        r = client.request(method, f"/models/{name}{url}", headers=admin, json={} if method == "PATCH" else None)
        assert r.status_code == 422 and detail(r).startswith("path.name: "), (method, url, r.text)


@pytest.mark.parametrize("key_id", [*BIG, "0", "-1", "%C2%B2", "1%00"])
def test_a_key_id_out_of_range_is_422(client, admin, key_id):
    r = client.delete(f"/keys/{key_id}", headers=admin)
    assert r.status_code == 422 and detail(r).startswith("path.key_id: ")


@pytest.mark.parametrize("item_id", [*BIG, "0", "-1", "%C2%B2"])
def test_an_item_id_out_of_range_is_422(client, reader, lineage, item_id):
    for kind in ("image", "mask"):
        r = client.get(f"/models/m/items/{item_id}/{kind}", headers=reader)
        assert r.status_code == 422 and detail(r).startswith("path.item_id: "), r.text


def test_an_item_id_in_range_that_names_no_item_is_404(client, reader, lineage):
    r = client.get("/models/m/items/2147483647/image", headers=reader)
    assert r.status_code == 404 and detail(r) == "model 'm' has no dataset item 2147483647"


@pytest.mark.parametrize("url, where", [
    *((f"/tasks?limit={n}", "query.limit") for n in BIG),
    *((f"/models/m/tasks?limit={n}", "query.limit") for n in BIG),
    *((f"/models/m/versions/1/samples?limit={n}", "query.limit") for n in BIG),
    *((f"/workers?seen_within_s={n}", "query.seen_within_s") for n in [*BIG, "-1", "0"]),
])
def test_an_integer_query_value_out_of_range_is_422(client, admin, lineage, url, where):
    r = client.get(url, headers=admin)
    assert r.status_code == 422 and detail(r).startswith(f"{where}: "), r.text


@pytest.mark.parametrize("version", ["", "%00", "1%00", "%C2%B2", "-0", "+1", "1e3", "0x1", "production%00"])
def test_odd_version_queries_are_422(client, admin, lineage, version):
    """``?version=`` (classes, segment) and ``?a=``/``?b=`` (compare): refused with the rule."""
    for url, where in ((f"/models/m/classes?version={version}", "query.version"),
                       (f"/models/m/compare?a={version}", "query.a"), (f"/models/m/compare?b={version}", "query.b")):
        r = client.get(url, headers=admin)
        assert r.status_code == 422 and detail(r).startswith(f"{where}: "), (url, r.text)
    r = client.post(f"/models/m/segment?version={version}", headers=admin,
                    files={"image": ("x.png", b"x", "image/png")})
    assert r.status_code == 422 and detail(r).startswith("query.version: "), r.text


@pytest.mark.parametrize("version", [*BIG[:1], "0000000000", "4294967296"])
def test_version_numbers_past_the_column_are_404(client, admin, lineage, version):
    for url in (f"/models/m/versions/{version}", f"/models/m/classes?version={version}",
                f"/models/m/compare?b={version}", f"/models/m/versions/{version}/samples"):
        assert client.get(url, headers=admin).status_code == 404, url


@pytest.mark.parametrize("task_id", ["a%00b", "%00", "x" * 37, "%C2%B2", "a%0Ab"])
def test_a_task_id_outside_the_rule_is_422(client, admin, task_id):
    for method, url in (("GET", f"/tasks/{task_id}"), ("POST", f"/tasks/{task_id}/cancel")):
        r = client.request(method, url, headers=admin)
        assert r.status_code == 422 and detail(r).startswith("path.task_id: "), (url, r.text)


@pytest.mark.parametrize("alias", ["a%00", "%C2%B2", "a%E2%80%8Bb"])
def test_an_alias_outside_the_rule_is_422(client, admin, lineage, alias):
    for method in ("PUT", "DELETE"):
        r = client.request(method, f"/models/m/aliases/{alias}", headers=admin, json={"version": 1})
        assert r.status_code == 422 and detail(r).startswith("path.alias: "), r.text


@pytest.mark.parametrize("token", ["a%00b", "%00", "x" * 65, "%C2%B2"])
def test_a_ping_token_outside_the_rule_is_422(client, admin, token):
    r = client.get(f"/workers/ping/{token}", headers=admin)
    assert r.status_code == 422 and detail(r).startswith("path.token: "), r.text


def test_a_ping_token_that_no_worker_answered_is_404(client, admin):
    r = client.get(f"/workers/ping/{'0' * 32}", headers=admin)
    assert r.status_code == 404 and "no worker has answered ping" in detail(r)


@pytest.mark.parametrize("confirm", ["m%00", "%00"])
def test_a_nul_in_confirm_is_422(client, admin, lineage, confirm):
    r = client.delete(f"/models/m?confirm={confirm}", headers=admin)
    assert r.status_code == 422 and detail(r).startswith("query.confirm: "), r.text


@pytest.mark.parametrize("key", [b"a\x00b", b"a\x01b", "\u202eab".encode(), b"x" * 201, b""])
def test_an_idempotency_key_outside_printable_ascii_is_422(client, admin, lineage, key):
    """NUL would reach PostgreSQL's text column (a real HTTP server refuses it in a header; the ASGI
    app must not rely on that)."""
    r = client.post("/models/m/tasks", headers={**admin, "Idempotency-Key": key},
                    data={"spec": '{"classes": ["car"]}'}, files={"archive": ("a.zip", b"PK", "application/zip")})
    assert r.status_code == 422 and detail(r).startswith("header.idempotency-key: "), r.text


@pytest.mark.parametrize("models", [["m\x00"], ["%C2%B2"], ["\u00b2"]])
def test_key_model_names_outside_the_rule_are_422(client, admin, lineage, models):
    r = client.post("/keys", json={"name": "x", "scopes": ["read"], "models": models}, headers=admin)
    assert r.status_code == 422 and detail(r).startswith("body.models.0: "), r.text


def test_a_key_limited_to_a_model_with_an_odd_name_in_the_path_is_still_422(client, lineage):
    """The edge check comes first, whatever the key: a limited key learns nothing about other models."""
    limited = bearer(make_key(client, ["read"], "m reader", models=["m"]))
    r = client.get("/models/%C2%B2", headers=limited)
    assert r.status_code == 422 and detail(r).startswith("path.name: ")
