"""A model's class catalogue through the real app (both flavours): GET /models/{name}/classes,
with ``?version=`` the legend of that version's masks. Each model has its own catalogue."""

from __future__ import annotations

import pytest

from services.registry.classes import class_colour, colour_hex
from tests.api.test_models import new_model, register, upload
from tests.services.test_registry import seed_lineage


@pytest.fixture
def lineage(client, prepared) -> None:
    """Model "m": v1 (background, cat, dog) -> v2 (+ bird) -> v3 (+ fish)."""
    seed_lineage(client.app.state.strata.sessions, prepared)


def test_classes(client, reader, lineage):
    classes = client.get("/models/m/classes", headers=reader).json()
    assert [(c["index"], c["name"], c["task_id"]) for c in classes] == [
        (0, "background", None), (1, "cat", "t1"), (2, "dog", "t1"), (3, "bird", "t2"), (4, "fish", "t3")]
    assert all(c["created_at"] for c in classes)


def test_legend(client, reader, lineage):
    legend = client.get("/models/m/classes?version=2", headers=reader).json()
    assert [(e["index"], e["name"]) for e in legend] == [(0, "background"), (1, "cat"), (2, "dog"), (3, "bird")]
    assert legend[0]["color"] == [0, 0, 0] and legend[0]["hex"] == "#000000"
    assert len({tuple(e["color"]) for e in legend}) == 4
    # Colours belong to classes, not versions: the same in every version that has the class.
    later = client.get("/models/m/classes?version=3", headers=reader).json()
    assert later[:4] == legend
    assert client.get("/models/m/classes?version=production", headers=reader).json() == legend
    r = client.get("/models/m/classes?version=12", headers=reader)
    assert r.status_code == 404 and "model version 12 does not exist" in r.json()["detail"]
    assert client.get("/models/nope/classes", headers=reader).status_code == 404


def test_a_new_model_knows_no_class(client, admin, reader):
    new_model(client, admin)
    assert client.get("/models/m/classes", headers=reader).json() == []
    assert client.get("/models/m/classes?version=1", headers=reader).status_code == 404


def test_the_same_class_name_in_two_models_has_its_own_index_in_each(client, admin, reader):
    new_model(client, admin, "a")
    new_model(client, admin, "b")
    a = register(client, admin, "a", ["car"])
    b = register(client, admin, "b", ["bike", "car"])
    assert (a["classes"], b["classes"]) == ({"car": 1}, {"bike": 1, "car": 2})
    catalogues = {name: client.get(f"/models/{name}/classes", headers=reader).json() for name in ("a", "b")}
    assert [(c["index"], c["name"], c["task_id"]) for c in catalogues["a"]] == [
        (0, "background", None), (1, "car", a["id"])]
    assert [(c["index"], c["name"], c["task_id"]) for c in catalogues["b"]] == [
        (0, "background", None), (1, "bike", b["id"]), (2, "car", b["id"])]
    # A class's colour follows its index in its model: "car" is drawn differently in a and b.
    car = {name: next(c for c in catalogues[name] if c["name"] == "car") for name in ("a", "b")}
    assert car["a"]["color"] == list(class_colour(1)) and car["a"]["hex"] == colour_hex(1)
    assert car["b"]["color"] == list(class_colour(2)) and car["b"]["hex"] == colour_hex(2)
    # A later task of a takes a's next index, whatever b holds.
    assert register(client, admin, "a", ["bike"])["classes"] == {"bike": 2}
    r = client.post("/models/a/tasks", data={"spec": '{"classes": ["car"]}'}, files=upload(1), headers=admin)
    assert r.status_code == 409 and "already has classes car" in r.json()["detail"], r.text  # unique in a model
