"""POST /models/{name}/tasks with annotation tools' exports as they come out of the tool: the task
registered with its classes by name, its masks stored in local index form, and its import report
read back from GET /tasks/{id}."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.db.session import make_engine, make_session_factory, session_scope
from services.registry.models import create_model
from services.storage import open_store
from tests.api.test_tasks import MODEL, bearer, leftovers, model_id, post_task
from tests.services.data.formats import test_cityscapes as cityscapes
from tests.services.data.formats import test_voc as voc
from tests.services.data.formats.helpers import zip_bytes

NOTHING = {"tasks": 0, "dataset_items": 0, "classes": 0, "objects": 0, "messages": 0}


# --- shared helpers -------------------------------------------------------------------------------
@pytest.fixture
def admin(prepared):
    """An admin key, and the (empty) model the tests upload to."""
    with session_scope(make_session_factory(make_engine(prepared))) as s:
        create_model(s, MODEL)
    return bearer(prepared, "admin")


def post_export(client, headers, spec: dict, entries: dict[str, bytes | str]):
    """POST the export's files, zipped as the tool hands them out, as the task's `archive`."""
    return post_task(client, headers, spec, archive=zip_bytes(entries))


def registered(client, headers, response) -> dict:
    """The task a 202 answer registered, as GET /tasks/{id} reads it back."""
    assert response.status_code == 202, response.text
    task = client.get(response.headers["location"], headers=headers).json()
    assert task == response.json()
    return task


def stored_mask(settings, task: dict, stem: str) -> np.ndarray:
    """A stored mask of the task, in local index form."""
    key = f"models/{model_id(settings)}/datasets/{task['id']}/masks/{stem}.png"
    with open_store(settings).open(key) as f:
        return np.asarray(Image.open(io.BytesIO(f.read())))


def issue(task: dict, kind: str) -> dict | None:
    return next((i for i in task["import_report"]["issues"] if i["kind"] == kind), None)


# --- Pascal VOC -----------------------------------------------------------------------------------
def test_a_pascal_voc_export(client, prepared, admin):
    masks = {"2007_000032": voc.scene(voc.CAT, voc.PERSON), "2007_000039": voc.scene(voc.CAT)}
    entries = voc.export(masks, lists={"train": ["2007_000032"], "val": ["2007_000039"]})
    task = registered(client, admin, post_export(client, admin, {"classes": ["cat"], "format": "voc",
                                                                 "other_labels": "background", "epochs": 1}, entries))
    assert task["classes"] == {"cat": 1}
    local = stored_mask(prepared, task, "2007_000032")
    assert local[0, 5] == 1 and local[2, 5] == 0 and local[0, 1] == 255  # cat, person -> background, void
    report = task["import_report"]
    assert report["format"] == "voc" and report["images"] == 2 and report["class_images"] == {"cat": 2}
    assert issue(task, "unknown_labels")["labels"] == {"person": 1}


# --- Cityscapes-style label ids -------------------------------------------------------------------
def test_a_cityscapes_export(client, prepared, admin):
    spec = {"classes": ["car", "person"], "format": "cityscapes", "epochs": 1}
    entries = cityscapes.export(cityscapes.FRAMES)
    refused = post_export(client, admin, spec, entries)  # other_labels "reject": road, static are unnamed
    assert refused.status_code == 422
    assert "'road' (2 images), 'static' (1 images)" in refused.json()["detail"]
    assert leftovers(prepared) == NOTHING

    task = registered(client, admin, post_export(client, admin, {**spec, "other_labels": "ignore"}, entries))
    assert task["classes"] == {"car": 1, "person": 2}
    local = stored_mask(prepared, task, "aachen_000000_000019")
    assert local[4, 4] == 1 and local[4, 12] == 2 and local[1, 1] == 255 and (local[-2:] == 255).all()
    report = task["import_report"]
    assert report["format"] == "cityscapes" and report["images"] == 2
    assert issue(task, "unknown_labels")["labels"] == {"road": 2, "static": 1}
    assert issue(task, "unused_files") is None
