"""/models and /classes through the real app (both flavours), on versions recorded as the worker
records them (``record_version``), with placeholder checkpoint keys: nothing here loads one."""

from __future__ import annotations

import pytest

from tests.api.test_auth import bearer, make_key
from tests.services.test_registry import seed_lineage


@pytest.fixture
def admin(client) -> dict[str, str]:
    return bearer(make_key(client, ["admin"]))


@pytest.fixture
def reader(client) -> dict[str, str]:
    return bearer(make_key(client, ["infer"]))


@pytest.fixture
def lineage(client, prepared) -> None:
    """v1 (base) -> v2 (production) -> v3 (a candidate: forgot 'cat')."""
    seed_lineage(client.app.state.strata.sessions, prepared)


def test_no_models_yet(client, reader):
    assert client.get("/models", headers=reader).json() == []
    r = client.get("/models/1", headers=reader)
    assert r.status_code == 404 and r.json()["detail"] == "model version 1 does not exist (no version exists yet)"
    r = client.get("/models/production", headers=reader)
    assert r.status_code == 404 and "'production' is neither a version number nor a set alias" in r.json()["detail"]


def test_list_models(client, reader, lineage):
    models = client.get("/models", headers=reader).json()
    assert [(m["version"], m["parent"], m["aliases"]) for m in models] == [
        (1, None, []), (2, 1, ["production"]), (3, 2, ["latest"])]
    assert models[1]["miou"]["new"] == pytest.approx(0.5)


def test_model_detail(client, reader, lineage):
    r = client.get("/models/2", headers=reader)
    assert r.status_code == 200, r.text
    m = r.json()
    assert (m["version"], m["parent"], m["task_id"], m["method"]) == (2, 1, "t2", "ilt")
    assert m["lineage"] == [1, 2] and m["aliases"] == ["production"]
    assert m["hyperparameters"] == {"lr": 0.01, "epochs": 2}
    assert m["checkpoint"] == {"key": "checkpoints/test-t2/model.pt", "sha256": "0" * 64, "bytes": 123}
    assert m["iou"] == pytest.approx({"background": 0.88, "cat": 0.68, "dog": 0.57, "bird": 0.5})
    assert m["forgetting"] == pytest.approx({"background": 0.02, "cat": 0.02, "dog": 0.03})
    assert m["miou"]["old"] == pytest.approx((0.88 + 0.68 + 0.57) / 3)
    bird = m["classes"][3]
    assert (bird["index"], bird["name"], bird["role"], bird["forgetting"]) == (3, "bird", "new", None)
    assert bird["tp"] + bird["fp"] + bird["fn"] == 1_000_000
    assert m["promotion"]["promote"] is True


def test_candidate_says_why_it_waits(client, reader, lineage):
    m = client.get("/models/3", headers=reader).json()
    assert m["aliases"] == ["latest"]
    p = m["promotion"]
    assert p["promote"] is False and p["worst_old_class"] == 1
    assert p["worst_old_class_drop_points"] == pytest.approx(13.0)
    assert "'cat' lost 13.00 IoU points" in p["summary"]
    assert m["forgetting"]["cat"] == pytest.approx(0.13)
    assert client.get("/models/latest", headers=reader).json()["version"] == 3


def test_promotion_and_rollback(client, admin, reader, lineage):
    r = client.post("/models/3/promote", headers=admin)
    assert r.status_code == 200 and r.json() == {"alias": "production", "version": 3, "previous": 2}
    assert client.get("/models/production", headers=reader).json()["version"] == 3
    assert client.get("/models/3", headers=reader).json()["aliases"] == ["latest", "production"]

    r = client.post("/models/1/promote", headers=admin)  # rollback
    assert r.json() == {"alias": "production", "version": 1, "previous": 3}
    models = {m["version"]: m["aliases"] for m in client.get("/models", headers=reader).json()}
    assert models == {1: ["production"], 2: [], 3: ["latest"]}

    r = client.post("/models/7/promote", headers=admin)
    assert r.status_code == 404 and "known versions: 1, 2, 3" in r.json()["detail"]
    assert client.post("/models/2/promote", headers=reader).status_code == 403


def test_legend(client, reader, lineage):
    legend = client.get("/models/2/classes", headers=reader).json()
    assert [(e["index"], e["name"]) for e in legend] == [(0, "background"), (1, "cat"), (2, "dog"), (3, "bird")]
    assert legend[0]["color"] == [0, 0, 0] and legend[0]["hex"] == "#000000"
    assert len({tuple(e["color"]) for e in legend}) == 4
    # Colours belong to classes, not versions: the same in every version that has the class.
    later = client.get("/models/3/classes", headers=reader).json()
    assert later[:4] == legend
    assert client.get("/models/12/classes", headers=reader).status_code == 404


def test_classes(client, reader, lineage):
    classes = client.get("/classes", headers=reader).json()
    assert [(c["index"], c["name"], c["task_id"]) for c in classes] == [
        (0, "background", None), (1, "cat", "t1"), (2, "dog", "t1"), (3, "bird", "t2"), (4, "fish", "t3")]


def test_detail_reflects_the_settings_of_the_app(prepared):
    """A lenient threshold in the settings the versions were recorded under makes v3 promotable."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    lenient = prepared.model_copy(update={"promote_max_old_miou_drop": 20.0})
    with TestClient(create_app(lenient)) as c:
        seed_lineage(c.app.state.strata.sessions, lenient)
        p = c.get("/models/3", headers=bearer(make_key(c, ["infer"]))).json()["promotion"]
    assert p["promote"] is True and any("within the limit of 20" in r for r in p["reasons"])
