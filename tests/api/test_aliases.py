"""A model's aliases through the real app (both flavours): GET /models/{name}/aliases,
PUT /models/{name}/aliases/{alias} (production: promotion and rollback; names of one's own),
DELETE /models/{name}/aliases/{alias}; on versions recorded as the worker records them."""

from __future__ import annotations

import pytest

from tests.api.test_models import new_model
from tests.services.test_registry import seed_lineage


@pytest.fixture
def lineage(client, prepared) -> None:
    """Model "m": v1 (base) -> v2 (production) -> v3 (latest, a candidate)."""
    seed_lineage(client.app.state.strata.sessions, prepared)


def aliases(client, headers, model: str = "m") -> dict[str, int]:
    r = client.get(f"/models/{model}/aliases", headers=headers)
    assert r.status_code == 200, r.text
    return {a["name"]: a["version"] for a in r.json()}


def test_list_aliases(client, reader, lineage):
    listed = client.get("/models/m/aliases", headers=reader).json()
    assert [(a["name"], a["version"]) for a in listed] == [("latest", 3), ("production", 2)]
    assert all(a["updated_at"] for a in listed)
    assert client.get("/models/nope/aliases", headers=reader).status_code == 404


def test_promotion_and_rollback(client, admin, reader, lineage):
    r = client.put("/models/m/aliases/production", json={"version": 3}, headers=admin)
    assert r.status_code == 200 and r.json() == {"alias": "production", "version": 3, "previous": 2}
    assert client.get("/models/m/versions/production", headers=reader).json()["version"] == 3
    assert client.get("/models/m/versions/3", headers=reader).json()["aliases"] == ["latest", "production"]
    assert client.get("/models/m", headers=reader).json()["production"] == 3

    r = client.put("/models/m/aliases/production", json={"version": 1}, headers=admin)  # rollback
    assert r.json() == {"alias": "production", "version": 1, "previous": 3}
    versions = {v["version"]: v["aliases"] for v in client.get("/models/m/versions", headers=reader).json()}
    assert versions == {1: ["production"], 2: [], 3: ["latest"]}

    r = client.put("/models/m/aliases/production", json={"version": 7}, headers=admin)
    assert r.status_code == 404 and r.json()["detail"] == "model version 7 does not exist"
    assert client.put("/models/m/aliases/production", json={"version": 2}, headers=reader).status_code == 403
    assert aliases(client, reader)["production"] == 1


def test_an_alias_of_ones_own(client, admin, reader, lineage):
    r = client.put("/models/m/aliases/candidate", json={"version": 3}, headers=admin)
    assert r.status_code == 200 and r.json() == {"alias": "candidate", "version": 3, "previous": None}
    assert client.get("/models/m/versions/candidate", headers=reader).json()["version"] == 3
    assert client.get("/models/m/versions/3", headers=reader).json()["aliases"] == ["candidate", "latest"]
    r = client.put("/models/m/aliases/candidate", json={"version": 1}, headers=admin)
    assert r.json() == {"alias": "candidate", "version": 1, "previous": 3}
    assert aliases(client, reader) == {"candidate": 1, "latest": 3, "production": 2}
    r = client.delete("/models/m/aliases/candidate", headers=admin)
    assert r.status_code == 204 and r.content == b""
    assert aliases(client, reader) == {"latest": 3, "production": 2}
    r = client.delete("/models/m/aliases/candidate", headers=admin)
    assert r.status_code == 404 and "alias 'candidate' is not set" in r.json()["detail"]
    assert client.get("/models/m/versions/candidate", headers=reader).status_code == 404


def test_the_services_aliases_are_not_moved_or_removed_by_hand(client, admin, reader, lineage):
    r = client.put("/models/m/aliases/latest", json={"version": 1}, headers=admin)
    assert r.status_code == 409 and "moved by the service only" in r.json()["detail"]
    for name in ("production", "latest"):
        r = client.delete(f"/models/m/aliases/{name}", headers=admin)
        assert r.status_code == 409 and f"'{name}' cannot be removed" in r.json()["detail"]
    assert aliases(client, reader) == {"latest": 3, "production": 2}


@pytest.mark.parametrize("name", ["Candidate", "1st", "-x", "a.b", "x" * 65, "%C3%A9t%C3%A9"])
def test_an_invalid_alias_name_is_422(client, admin, reader, lineage, name):
    r = client.put(f"/models/m/aliases/{name}", json={"version": 1}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"].startswith("path.alias:"), r.text
    assert client.delete(f"/models/m/aliases/{name}", headers=admin).status_code == 422
    assert aliases(client, reader) == {"latest": 3, "production": 2}


@pytest.mark.parametrize("body", [{}, {"version": 0}, {"version": "two"}, {"version": 2**31}, {"version": True},
                                  {"version": "2"},
                                  {"version": 1, "alias": "x"}])
def test_a_bad_body_is_422(client, admin, lineage, body):
    r = client.put("/models/m/aliases/candidate", json=body, headers=admin)
    assert r.status_code == 422 and r.json()["detail"].startswith("body"), r.text


def test_aliases_of_two_models_are_their_own(client, prepared, admin, reader, lineage):
    seed_lineage(client.app.state.strata.sessions, prepared, "other", prefix="o-")
    client.put("/models/other/aliases/production", json={"version": 1}, headers=admin)
    client.put("/models/m/aliases/candidate", json={"version": 3}, headers=admin)
    assert aliases(client, reader, "m") == {"candidate": 3, "latest": 3, "production": 2}
    assert aliases(client, reader, "other") == {"latest": 3, "production": 1}
    new_model(client, admin, "empty")
    assert aliases(client, reader, "empty") == {}
    r = client.put("/models/empty/aliases/production", json={"version": 1}, headers=admin)
    assert r.status_code == 404  # m's version 1 is not empty's
