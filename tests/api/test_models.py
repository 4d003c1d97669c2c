"""The model resource through the real app (both flavours): POST /models, GET /models,
GET/PATCH/DELETE /models/{name}.

Deletion is tested on versions published as the worker publishes them: a task registered through
the API (its dataset objects in the store), claimed, planned and recorded by ``record_step`` (its
checkpoint uploaded), with an untrained LR-ASPP network, since nothing here looks at its answers.
The helpers here are shared with test_versions, test_aliases and test_classes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from services.db.models import (
    Alias,
    ClassMetric,
    DatasetItem,
    Model,
    ModelVersion,
    SemanticClass,
    Task,
)
from services.db.session import session_scope
from services.evaluation.metrics import ClassScore
from services.jobs.claim import Claim, claim
from services.jobs.context import JobContext
from services.jobs.plan import build_plan
from services.jobs.record import record_step
from services.learning.zoo import build_model
from services.registry.models import get_model
from tests.services.test_registry import score

ARCH = "lraspp_mobilenet_v3_large"  # small: its checkpoints are quick to write


# --- helpers ---------------------------------------------------------------------------------------
def new_model(client, headers, name: str = "m", **body) -> dict:
    r = client.post("/models", json={"name": name, **body}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def model_id(client, name: str = "m") -> int:
    with client.app.state.strata.sessions() as s:
        return get_model(s, name).id


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def upload(n_classes: int, n: int = 3) -> list:
    """Multipart parts of ``n`` image/index-mask pairs labelling classes 1..n_classes."""
    parts = []
    for i in range(n):
        image = np.random.default_rng(i).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        mask = np.zeros((12, 16), np.uint8)
        for k in range(1, n_classes + 1):
            mask[(i + 2 * k) % 12] = k
        parts += [("images", (f"img{i}.png", _png(image), "image/png")),
                  ("masks", (f"img{i}.png", _png(mask), "image/png"))]
    return parts


def register(client, headers, model: str, classes: list[str], **spec) -> dict:
    """A task of ``model`` registered through the API (its first: architecture ARCH)."""
    body = {"classes": classes, "architecture": ARCH, **spec}
    r = client.post(f"/models/{model}/tasks", data={"spec": json.dumps(body)}, files=upload(len(classes)),
                    headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def finish(client, task_id: str, ious: Mapping[str, float] | None = None) -> int:
    """Run the worker's claim, plan and record on a registered task, as if it had trained: the
    checkpoint is uploaded and the version recorded with the scores ``ious`` ({class name: IoU};
    every class 0.5 by default, so the policy promotes). Returns the version number."""
    state = client.app.state.strata
    with session_scope(state.sessions) as s:
        result = claim(s, task_id, "test-worker")
    assert result.claim is Claim.RUN, result.reason
    with state.sessions() as s:
        plan = build_plan(s, task_id, result.parent_version)
    scores = {i: ClassScore(*score((ious or {}).get(name, 0.5))) for i, name in plan.class_map.items()}
    ctx = JobContext(state.settings, state.sessions, state.store, "test-worker")
    return record_step(ctx, plan, build_model(plan.architecture, len(plan.class_map)), scores, "ft")


def trained(client, headers, model: str, classes: list[str], ious: Mapping[str, float] | None = None) -> int:
    """A task registered and finished: the new version's number."""
    return finish(client, register(client, headers, model, classes)["id"], ious)


def owned_rows(client, mid: int) -> dict[str, int]:
    """How many rows of each table belong to the model."""
    with client.app.state.strata.sessions() as s:
        counts = {t.__tablename__: s.scalar(select(func.count()).select_from(t).where(t.model_id == mid))
                  for t in (Task, SemanticClass, ModelVersion, ClassMetric, Alias)}
        counts["dataset_items"] = s.scalar(select(func.count()).select_from(DatasetItem).join(Task)
                                           .where(Task.model_id == mid))
        counts["models"] = s.scalar(select(func.count()).select_from(Model).where(Model.id == mid))
    return counts


def objects(client, prefix: str = "") -> list[str]:
    return sorted(o.key for o in client.app.state.strata.store.list(prefix))


# --- creating and reading --------------------------------------------------------------------------
def test_create_and_read_a_model(client, admin, reader, prepared):
    assert client.get("/models", headers=reader).json() == []
    r = client.post("/models", json={"name": "street-cam_7.b", "description": "entrance camera"}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/models/street-cam_7.b"
    m = r.json()
    assert (m["name"], m["description"], m["architecture"]) == ("street-cam_7.b", "entrance camera", None)
    assert (m["auto_promote"], m["promote_max_old_miou_drop"]) == (None, None)
    assert m["policy"] == {"auto_promote": prepared.auto_promote,
                           "max_old_miou_drop": prepared.promote_max_old_miou_drop}
    assert (m["production"], m["latest"], m["versions"], m["classes"], m["pending_tasks"], m["last_task"]) == (
        None, None, 0, 0, 0, None)
    assert client.get("/models/street-cam_7.b", headers=reader).json() == m
    new_model(client, admin, "a")
    assert [x["name"] for x in client.get("/models", headers=reader).json()] == ["a", "street-cam_7.b"]
    r = client.get("/models/nope", headers=reader)
    assert r.status_code == 404 and r.json()["detail"].startswith("no model named 'nope' (models: a, street-cam_7.b)")


def test_a_model_shows_what_it_serves_and_does(client, admin, reader):
    new_model(client, admin)
    task = register(client, admin, "m", ["car", "person"])
    m = client.get("/models/m", headers=reader).json()
    assert (m["architecture"], m["classes"], m["pending_tasks"], m["versions"]) == (ARCH, 2, 1, 0)
    assert (m["last_task"]["id"], m["last_task"]["status"]) == (task["id"], "queued")
    assert finish(client, task["id"]) == 1
    m = client.get("/models/m", headers=reader).json()
    assert (m["production"], m["latest"], m["versions"], m["pending_tasks"]) == (1, 1, 1, 0)
    assert m["last_task"]["status"] == "succeeded" and m["last_task"]["finished_at"] is not None


@pytest.mark.parametrize("body, field", [
    ({"name": "a b"}, "body.name"),
    ({"name": ""}, "body.name"),
    ({"name": "-leading-dash"}, "body.name"),
    ({"name": "a/b"}, "body.name"),
    ({"name": "x" * 65}, "body.name"),
    ({"name": "café"}, "body.name"),
    ({"name": 7}, "body.name"),
    ({}, "body.name"),
    ({"name": "m", "description": "d" * 2001}, "body.description"),
    ({"name": "m", "description": "nul\x00byte"}, "body.description"),
    ({"name": "m\x00"}, "body.name"),
    ({"name": "m", "auto_promote": False}, "body.auto_promote"),
])
def test_bad_model_requests_are_422_naming_the_field(client, admin, body, field):
    r = client.post("/models", json=body, headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}:"), r.json()
    assert client.get("/models", headers=admin).json() == []


def test_a_taken_name_is_409(client, admin):
    new_model(client, admin, "m", description="first")
    r = client.post("/models", json={"name": "m", "description": "second"}, headers=admin)
    assert r.status_code == 409 and r.json()["detail"] == "a model named 'm' already exists"
    assert client.get("/models/m", headers=admin).json()["description"] == "first"


def test_names_in_paths_are_checked(client, reader):
    r = client.get("/models/-x", headers=reader)
    assert r.status_code == 422 and r.json()["detail"].startswith("path.name:")
    assert client.get("/models/" + "x" * 65, headers=reader).status_code == 422


# --- changing ----------------------------------------------------------------------------------
def test_patch_changes_only_the_fields_sent(client, admin, reader, prepared):
    created = new_model(client, admin, "m", description="first")
    r = client.patch("/models/m", json={"auto_promote": False}, headers=admin)
    assert r.status_code == 200, r.text
    m = r.json()
    assert (m["description"], m["auto_promote"], m["promote_max_old_miou_drop"]) == ("first", False, None)
    assert m["policy"] == {"auto_promote": False, "max_old_miou_drop": prepared.promote_max_old_miou_drop}
    assert m["updated_at"] >= created["updated_at"]

    m = client.patch("/models/m", json={"promote_max_old_miou_drop": 2.5, "description": "second"},
                     headers=admin).json()
    assert (m["description"], m["auto_promote"], m["promote_max_old_miou_drop"]) == ("second", False, 2.5)
    assert m["policy"] == {"auto_promote": False, "max_old_miou_drop": 2.5}

    m = client.patch("/models/m", json={"auto_promote": None}, headers=admin).json()  # back to the service's
    assert (m["description"], m["auto_promote"], m["promote_max_old_miou_drop"]) == ("second", None, 2.5)
    assert m["policy"] == {"auto_promote": prepared.auto_promote, "max_old_miou_drop": 2.5}

    m = client.patch("/models/m", json={}, headers=admin).json()  # nothing sent: nothing changes
    assert (m["description"], m["auto_promote"], m["promote_max_old_miou_drop"]) == ("second", None, 2.5)
    m = client.patch("/models/m", json={"promote_max_old_miou_drop": None}, headers=admin).json()
    assert m["promote_max_old_miou_drop"] is None
    assert m["policy"] == {"auto_promote": prepared.auto_promote,
                           "max_old_miou_drop": prepared.promote_max_old_miou_drop}
    assert client.get("/models/m", headers=reader).json()["description"] == "second"


@pytest.mark.parametrize("body, field", [
    ({"promote_max_old_miou_drop": 101}, "body.promote_max_old_miou_drop"),
    ({"promote_max_old_miou_drop": -1}, "body.promote_max_old_miou_drop"),
    ({"auto_promote": "sometimes"}, "body.auto_promote"),
    ({"name": "renamed"}, "body.name"),
    ({"architecture": ARCH}, "body.architecture"),
    ({"description": "bell\x07"}, "body.description"),
])
def test_bad_patches_are_422_naming_the_field(client, admin, body, field):
    new_model(client, admin)
    r = client.patch("/models/m", json=body, headers=admin)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}:"), r.text
    m = client.get("/models/m", headers=admin).json()
    assert (m["name"], m["auto_promote"], m["promote_max_old_miou_drop"]) == ("m", None, None)


def test_patch_needs_admin_and_a_model(client, admin, reader):
    new_model(client, admin)
    assert client.patch("/models/m", json={"description": "x"}, headers=reader).status_code == 403
    assert client.patch("/models/nope", json={"description": "x"}, headers=admin).status_code == 404
    assert client.get("/models/m", headers=reader).json()["description"] == ""


def test_the_models_policy_decides_its_next_version(client, admin, reader):
    """auto_promote off on the model holds a version the service's settings would promote."""
    new_model(client, admin)
    client.patch("/models/m", json={"auto_promote": False}, headers=admin)
    assert trained(client, admin, "m", ["car"]) == 1
    m = client.get("/models/m", headers=reader).json()
    assert (m["production"], m["latest"]) == (None, 1)
    p = client.get("/models/m/versions/1", headers=reader).json()["promotion"]
    assert p["promote"] is False and "the model's auto_promote: false" in p["summary"]
    client.patch("/models/m", json={"auto_promote": None}, headers=admin)
    assert client.put("/models/m/aliases/production", json={"version": 1}, headers=admin).status_code == 200
    assert trained(client, admin, "m", ["bus"]) == 2
    assert client.get("/models/m", headers=reader).json()["production"] == 2


# --- deleting ----------------------------------------------------------------------------------
def test_a_model_without_versions_is_deleted_without_confirmation(client, admin, reader):
    new_model(client, admin)
    r = client.delete("/models/m", headers=admin)
    assert r.status_code == 204 and r.content == b""
    assert client.get("/models/m", headers=reader).status_code == 404
    assert client.delete("/models/m", headers=admin).status_code == 404
    assert client.delete("/models/m", headers=reader).status_code == 403


def test_a_model_with_a_queued_task_is_not_deleted(client, admin):
    new_model(client, admin)
    task = register(client, admin, "m", ["car"])
    mid = model_id(client)
    uploaded = objects(client, f"models/{mid}/")
    assert len(uploaded) == 6
    for query in ("", "?confirm=m"):
        r = client.delete(f"/models/m{query}", headers=admin)
        assert r.status_code == 409 and task["id"] in r.json()["detail"], r.text
        assert "queued or running" in r.json()["detail"]
    assert owned_rows(client, mid)["tasks"] == 1 and objects(client, f"models/{mid}/") == uploaded
    assert client.post(f"/tasks/{task['id']}/cancel", headers=admin).status_code == 200
    assert client.delete("/models/m", headers=admin).status_code == 204  # no version: no confirmation
    assert objects(client, f"models/{mid}/") == []  # the cancelled task's dataset went too
    assert owned_rows(client, mid) == dict.fromkeys(owned_rows(client, mid), 0)


def test_deleting_a_model_with_versions_needs_its_name_and_removes_rows_and_objects(client, admin, reader):
    new_model(client, admin)
    new_model(client, admin, "other")
    assert trained(client, admin, "m", ["car"]) == 1
    assert trained(client, admin, "m", ["bus"]) == 2
    assert trained(client, admin, "other", ["car"]) == 1
    client.put("/models/m/aliases/candidate", json={"version": 1}, headers=admin)
    mid, other = model_id(client), model_id(client, "other")
    # A version recorded before models existed keeps its object at its old key: it goes too.
    store = client.app.state.strata.store
    legacy = "checkpoints/1/model.pt"
    with session_scope(client.app.state.strata.sessions) as s:
        row = s.get(ModelVersion, (mid, 1))
        with store.open(row.checkpoint_key) as f:
            store.put_bytes(legacy, f.read())
        store.delete(row.checkpoint_key)
        row.checkpoint_key = legacy
    before = owned_rows(client, mid)
    assert before == {"tasks": 2, "classes": 3, "model_versions": 2, "class_metrics": 5, "aliases": 3,
                      "dataset_items": 6, "models": 1}
    mine = objects(client, f"models/{mid}/")
    assert sum("/checkpoints/" in k for k in mine) == 1 and sum("/datasets/" in k for k in mine) == 12
    theirs = objects(client, f"models/{other}/")
    others_rows = owned_rows(client, other)

    for query in ("", "?confirm=M", "?confirm=other"):
        r = client.delete(f"/models/m{query}", headers=admin)
        assert r.status_code == 409, r.text
        assert "has 2 version(s)" in r.json()["detail"] and "?confirm=m" in r.json()["detail"]
    assert owned_rows(client, mid) == before and objects(client, f"models/{mid}/") == mine
    assert store.exists(legacy)

    assert client.delete("/models/m?confirm=m", headers=admin).status_code == 204
    assert owned_rows(client, mid) == dict.fromkeys(before, 0)
    assert objects(client, f"models/{mid}/") == [] and not store.exists(legacy)
    # The other model is untouched.
    assert owned_rows(client, other) == others_rows and objects(client, f"models/{other}/") == theirs
    assert [m["name"] for m in client.get("/models", headers=reader).json()] == ["other"]
    assert client.get("/models/m/versions", headers=reader).status_code == 404
    # The name is free again; the new model is a new lineage (and a new id: object keys never collide).
    again = new_model(client, admin)
    assert (again["versions"], again["classes"], again["architecture"]) == (0, 0, None)
    assert model_id(client) != mid
    assert client.get("/models/m/versions", headers=reader).json() == []
