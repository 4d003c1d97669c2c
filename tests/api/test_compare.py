"""GET /models/{name}/compare through the real app (both flavours): per-class deltas of two versions
and the policy's verdict on one replacing the other (the dashboard's compare view and its
promote / roll back confirmation)."""

from __future__ import annotations

import pytest

from services.registry.classes import colour_hex
from tests.services.test_registry import NAMES, V1, V2, V3


def by_name(body: dict) -> dict[str, dict]:
    return {c["name"]: c for c in body["classes"]}


def test_default_is_the_latest_against_production(client, reader, lineage):
    body = client.get("/models/m/compare", headers=reader).json()
    assert (body["model"], body["a"]["version"], body["b"]["version"]) == ("m", 2, 3)
    assert body["a"]["aliases"] == ["production"] and body["b"]["aliases"] == ["latest"]
    rows = by_name(body)
    for index, iou in V2.items():
        row = rows[NAMES[index]]
        assert row["iou_a"] == pytest.approx(iou) and row["iou_b"] == pytest.approx(V3[index])
        assert row["delta"] == pytest.approx(V3[index] - iou)
        assert row["in_a"] and row["in_b"] and row["hex"] == colour_hex(index)
    assert rows["fish"] == {"index": 4, "name": "fish", "hex": colour_hex(4), "iou_a": None,
                            "iou_b": pytest.approx(0.40), "delta": None, "in_a": False, "in_b": True}
    # The largest drop first (cat lost 13 points), classes without a delta last.
    assert [c["name"] for c in body["classes"]][0] == "cat"
    assert body["classes"][-1]["name"] == "fish"
    verdict = body["verdict"]
    assert not verdict["promote"]
    assert verdict["summary"].startswith("v3 would not pass the policy against v2: old class 'cat' lost 13.00")
    assert verdict["worst_old_class"] == 1 and verdict["worst_old_class_drop_points"] == pytest.approx(13.0)


def test_when_the_latest_is_production_the_default_is_its_parent(client, admin, reader, lineage):
    assert client.put("/models/m/aliases/production", json={"version": 3}, headers=admin).status_code == 200
    body = client.get("/models/m/compare", headers=reader).json()
    assert (body["a"]["version"], body["b"]["version"]) == (2, 3)
    assert client.get("/models/m/compare?b=1", headers=reader).json()["a"]["version"] == 3  # production
    assert client.get("/models/m/compare?b=3", headers=reader).json()["a"]["version"] == 2


def test_a_rollback_names_the_classes_it_would_lose(client, reader, lineage):
    body = client.get("/models/m/compare?a=3&b=1", headers=reader).json()
    rows = by_name(body)
    assert rows["bird"]["in_b"] is False and rows["fish"]["in_b"] is False and rows["bird"]["delta"] is None
    assert rows["cat"]["delta"] == pytest.approx(V1[1] - V3[1])  # rolling back regains cat
    verdict = body["verdict"]
    assert not verdict["promote"]
    assert verdict["reasons"][0] == ("v1 does not know 'bird', 'fish', which v3 segments: requests would get "
                                     "those pixels as other classes")


def test_a_replacement_within_the_limit_passes_whatever_the_switch(client, admin, reader, lineage):
    # Automatic promotion off concerns automatic moves only: a person promoting by hand sees the checks.
    assert client.patch("/models/m", json={"auto_promote": False}, headers=admin).status_code == 200
    verdict = client.get("/models/m/compare?a=1&b=production", headers=reader).json()["verdict"]
    assert verdict["promote"] and verdict["summary"] == "v2 may replace v1"
    assert any("no old class lost more than 5 IoU points against v1" in r for r in verdict["reasons"])


def test_same_version_and_bad_references(client, reader, lineage):
    body = client.get("/models/m/compare?a=2&b=2", headers=reader).json()
    assert all(c["delta"] == 0 for c in body["classes"]) and body["verdict"]["promote"]
    r = client.get("/models/m/compare?a=9&b=2", headers=reader)
    assert r.status_code == 404 and "9" in r.json()["detail"]
    r = client.get("/models/m/compare?a=no%20such&b=2", headers=reader)
    assert r.status_code == 422 and "a" in str(r.json()["detail"])
    assert client.get("/models/m/compare").status_code == 401
    assert client.get("/models/nope/compare", headers=reader).status_code == 404


def test_a_model_without_versions_is_a_clear_404(client, admin, reader):
    assert client.post("/models", json={"name": "empty"}, headers=admin).status_code == 201
    r = client.get("/models/empty/compare", headers=reader)
    assert r.status_code == 404 and "the model has no version yet" in r.json()["detail"]
