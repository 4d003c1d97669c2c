"""A model's versions through the real app (both flavours): GET /models/{name}/versions,
GET/DELETE /models/{name}/versions/{v}.

Reading uses versions recorded as the worker records them (``record_version``) with placeholder
checkpoint keys: nothing here loads one. Deleting uses versions published with their checkpoints
(tests/api/test_models.py: ``trained``), so the objects can be seen to go.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.db.models import ClassMetric, ModelVersion, Task
from services.db.session import session_scope
from services.jobs import lifecycle
from tests.api.test_auth import bearer, make_key
from tests.api.test_models import model_id, new_model, objects, register, trained
from tests.services.test_registry import seed_lineage


@pytest.fixture
def lineage(client, prepared) -> None:
    """Model "m": v1 (base) -> v2 (production) -> v3 (a candidate: forgot 'cat')."""
    seed_lineage(client.app.state.strata.sessions, prepared)


def test_no_versions_yet(client, admin, reader):
    new_model(client, admin)
    assert client.get("/models/m/versions", headers=reader).json() == []
    r = client.get("/models/m/versions/1", headers=reader)
    assert r.status_code == 404
    assert r.json()["detail"] == "model version 1 does not exist (the model has no version yet)"
    r = client.get("/models/m/versions/production", headers=reader)
    assert r.status_code == 404 and "'production' is neither a version number nor a set alias" in r.json()["detail"]
    r = client.get("/models/nope/versions", headers=reader)
    assert r.status_code == 404 and "no model named 'nope'" in r.json()["detail"]
    assert client.get("/models/nope/versions/1", headers=reader).status_code == 404


def test_list_versions(client, reader, lineage):
    versions = client.get("/models/m/versions", headers=reader).json()
    assert [(v["model"], v["version"], v["parent"], v["aliases"]) for v in versions] == [
        ("m", 1, None, []), ("m", 2, 1, ["production"]), ("m", 3, 2, ["latest"])]
    assert versions[1]["miou"]["new"] == pytest.approx(0.5)
    assert [v["task_id"] for v in versions] == ["t1", "t2", "t3"]
    # What a table of versions shows without reading each one: checkpoint and promotion decision,
    # the same as in the detail.
    for v in versions:
        detail = client.get(f"/models/m/versions/{v['version']}", headers=reader).json()
        assert (v["checkpoint"], v["promotion"]) == (detail["checkpoint"], detail["promotion"])
    assert [v["promotion"]["promote"] for v in versions] == [True, True, False]


def test_scores_are_every_versions_per_class_iou_in_one_answer(client, reader, lineage):
    body = client.get("/models/m/scores", headers=reader).json()
    assert body["model"] == "m"
    cells = {(c["version"], c["name"]): c for c in body["cells"]}
    order = [(c["version"], c["index"]) for c in body["cells"]]
    assert order == sorted(order) and len(order) == 3 + 4 + 5
    for v in (1, 2, 3):
        detail = client.get(f"/models/m/versions/{v}", headers=reader).json()
        for c in detail["classes"]:
            cell = cells[(v, c["name"])]
            assert (cell["index"], cell["role"]) == (c["index"], c["role"])
            assert cell["iou"] == pytest.approx(c["iou"]) and cell["forgetting"] == pytest.approx(c["forgetting"])
    assert cells[(3, "cat")]["forgetting"] == pytest.approx(0.13) and cells[(3, "fish")]["role"] == "new"
    assert client.get("/models/m/scores").status_code == 401
    assert client.get("/models/nope/scores", headers=reader).status_code == 404


def test_version_detail(client, reader, lineage):
    r = client.get("/models/m/versions/2", headers=reader)
    assert r.status_code == 200, r.text
    m = r.json()
    assert (m["model"], m["version"], m["parent"], m["task_id"], m["method"]) == ("m", 2, 1, "t2", "ilt")
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
    assert client.get("/models/m/versions/production", headers=reader).json() == m


def test_candidate_says_why_it_waits(client, reader, lineage):
    m = client.get("/models/m/versions/3", headers=reader).json()
    assert m["aliases"] == ["latest"]
    p = m["promotion"]
    assert p["promote"] is False and p["worst_old_class"] == 1
    assert p["worst_old_class_drop_points"] == pytest.approx(13.0)
    assert "'cat' lost 13.00 IoU points" in p["summary"]
    assert m["forgetting"]["cat"] == pytest.approx(0.13)
    assert client.get("/models/m/versions/latest", headers=reader).json()["version"] == 3


@pytest.mark.parametrize("ref", ["2147483648", "0", "staging"])
def test_a_reference_to_no_version_is_404(client, reader, lineage, ref):
    """A number past the column, version 0 and an unset alias: 404, never 500."""
    r = client.get(f"/models/m/versions/{ref}", headers=reader)
    assert r.status_code == 404, r.text
    assert "known versions: 1, 2, 3" in r.json()["detail"]
    assert client.get(f"/models/m/classes?version={ref}", headers=reader).status_code == 404


@pytest.mark.parametrize("ref", ["%C2%B2", "%D9%A3", "99999999999999999999", "-1", "1.5", "%20", "a%00b", "Prod"])
def test_a_reference_that_is_neither_number_nor_alias_is_422(client, admin, reader, lineage, ref):
    """Non-ASCII digits, eleven digits and more, near-numbers, NUL bytes (which PostgreSQL refuses in a
    query): refused at the edge with the rule, on every route that takes a version reference."""
    for method, url in (("GET", f"/models/m/versions/{ref}"), ("DELETE", f"/models/m/versions/{ref}"),
                        ("GET", f"/models/m/classes?version={ref}")):
        r = client.request(method, url, headers=admin)
        assert r.status_code == 422, (url, r.text)
        assert "version" in r.json()["detail"] and "should match pattern" in r.json()["detail"]
    r = client.post(f"/models/m/segment?version={ref}", headers=reader, files={"image": ("x.png", b"x", "image/png")})
    assert r.status_code == 422, r.text


def test_versions_of_two_models_do_not_mix(client, prepared, reader, lineage):
    seed_lineage(client.app.state.strata.sessions, prepared, "other", prefix="o-")
    assert client.get("/models/other/versions/2", headers=reader).json()["task_id"] == "o-t2"
    assert client.get("/models/m/versions/2", headers=reader).json()["task_id"] == "t2"
    assert [v["model"] for v in client.get("/models/other/versions", headers=reader).json()] == ["other"] * 3


def test_detail_reflects_the_settings_of_the_app(prepared):
    """A lenient threshold in the settings the versions were recorded under makes v3 promotable."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    lenient = prepared.model_copy(update={"promote_max_old_miou_drop": 20.0})
    with TestClient(create_app(lenient)) as c:
        seed_lineage(c.app.state.strata.sessions, lenient)
        p = c.get("/models/m/versions/3", headers=bearer(make_key(c, ["read"]))).json()["promotion"]
    assert p["promote"] is True and any("within the limit of 20" in r for r in p["reasons"])


# --- deleting --------------------------------------------------------------------------------------
def version_rows(client, mid: int, version: int) -> dict[str, int]:
    with client.app.state.strata.sessions() as s:
        return {
            "version": s.scalar(select(func.count()).select_from(ModelVersion).where(
                ModelVersion.model_id == mid, ModelVersion.version == version)),
            "metrics": s.scalar(select(func.count()).select_from(ClassMetric).where(
                ClassMetric.model_id == mid, ClassMetric.version == version)),
            "tasks": s.scalar(select(func.count()).select_from(Task).where(
                Task.model_id == mid, Task.model_version == version)),
        }


def test_delete_a_version(client, admin, reader):
    """v1 -> v2 (production) -> v3 (held: the model's auto_promote is off), tagged "candidate"."""
    new_model(client, admin)
    new_model(client, admin, "other")
    assert [trained(client, admin, "m", [c]) for c in ("car", "bus")] == [1, 2]
    client.patch("/models/m", json={"auto_promote": False}, headers=admin)
    assert trained(client, admin, "m", ["van"]) == 3
    assert trained(client, admin, "other", ["car"]) == 1
    assert client.put("/models/m/aliases/candidate", json={"version": 3}, headers=admin).status_code == 200
    mid, other = model_id(client), model_id(client, "other")
    checkpoints = {v["version"]: client.get(f"/models/m/versions/{v['version']}", headers=reader).json()
                   ["checkpoint"]["key"] for v in client.get("/models/m/versions", headers=reader).json()}
    assert all(k.startswith(f"models/{mid}/checkpoints/{v}/") for v, k in checkpoints.items())
    assert set(checkpoints.values()) <= set(objects(client))
    others = objects(client, f"models/{other}/")

    r = client.delete("/models/m/versions/2", headers=admin)
    assert r.status_code == 409 and "version 2 is in production" in r.json()["detail"]
    r = client.delete("/models/m/versions/production", headers=admin)
    assert r.status_code == 409 and "in production" in r.json()["detail"]
    r = client.delete("/models/m/versions/1", headers=admin)
    assert r.status_code == 409 and "version 1 is the parent of version(s) 2" in r.json()["detail"]
    assert client.delete("/models/m/versions/3", headers=reader).status_code == 403
    assert client.delete("/models/m/versions/4", headers=admin).status_code == 404
    assert set(checkpoints.values()) <= set(objects(client))

    assert version_rows(client, mid, 3) == {"version": 1, "metrics": 4, "tasks": 1}
    r = client.delete("/models/m/versions/candidate", headers=admin)  # by alias, as any reference
    assert r.status_code == 204 and r.content == b""
    assert version_rows(client, mid, 3) == {"version": 0, "metrics": 0, "tasks": 0}
    assert checkpoints[3] not in objects(client) and {checkpoints[1], checkpoints[2]} <= set(objects(client))
    assert client.get("/models/m/versions/3", headers=reader).status_code == 404
    aliases = {a["name"]: a["version"] for a in client.get("/models/m/aliases", headers=reader).json()}
    assert aliases == {"production": 2, "latest": 2}  # candidate went with v3; latest moved back
    m = client.get("/models/m", headers=reader).json()
    assert (m["versions"], m["latest"], m["production"]) == (2, 2, 2)
    # The other model's version 1 and its objects are untouched; its aliases too.
    assert client.get("/models/other/versions/latest", headers=reader).json()["version"] == 1
    assert objects(client, f"models/{other}/") == others
    # The next version of m takes a new number: a deleted version's is never given again (a cached
    # copy, or a note of "version 3" somewhere, must never mean other weights).
    client.patch("/models/m", json={"auto_promote": None}, headers=admin)
    assert trained(client, admin, "m", ["tram"]) == 4
    assert client.get("/models/m/versions/3", headers=reader).status_code == 404
    assert [v["version"] for v in client.get("/models/m/versions", headers=reader).json()] == [1, 2, 4]


def test_no_version_is_deleted_while_a_task_is_pending(client, admin):
    new_model(client, admin)
    assert trained(client, admin, "m", ["car"]) == 1
    assert trained(client, admin, "m", ["bus"]) == 2
    task = register(client, admin, "m", ["van"])  # to start from production: v2
    client.put("/models/m/aliases/production", json={"version": 1}, headers=admin)
    r = client.delete("/models/m/versions/2", headers=admin)
    assert r.status_code == 409 and "queued or running" in r.json()["detail"]
    assert client.post(f"/tasks/{task['id']}/cancel", headers=admin).status_code == 200
    # The cancelled task was to start from v2: that does not keep v2 (nor break the deletion).
    assert client.delete("/models/m/versions/2", headers=admin).status_code == 204
    assert [v["version"] for v in client.get("/models/m/versions", headers=admin).json()] == [1]
    assert client.get(f"/tasks/{task['id']}", headers=admin).json()["status"] == "cancelled"


def test_a_version_a_failed_task_started_from_can_be_deleted(client, admin):
    new_model(client, admin)
    assert trained(client, admin, "m", ["car"]) == 1
    assert trained(client, admin, "m", ["bus"]) == 2
    task = register(client, admin, "m", ["van"])
    with session_scope(client.app.state.strata.sessions) as s:  # a worker started it from v2; it failed
        row = lifecycle.get_task(s, task["id"])
        lifecycle.start(row, 2)
        lifecycle.fail(s, row, "out of memory")
    client.put("/models/m/aliases/production", json={"version": 1}, headers=admin)
    r = client.delete("/models/m/versions/2", headers=admin)
    assert r.status_code == 204, r.text
    assert client.get(f"/tasks/{task['id']}", headers=admin).json()["status"] == "failed"
    assert trained(client, admin, "m", ["tram"]) == 3  # from production v1; the number 2 is not given again
    assert client.get("/models/m/versions/3", headers=admin).json()["parent"] == 1
