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


# --- COCO instances -------------------------------------------------------------------------------
def test_a_coco_instances_export(client, prepared, admin):
    from tests.services.data.formats.test_coco import box, polygon, two_images

    export = two_images()  # CVAT's "COCO 1.0": annotations/instances_default.json + images/
    export.annotate(1, 3, polygon(10, 6, 16, 12))  # a tree, which the spec does not name
    export.annotate(1, 2, polygon(2, 3, 4, 5))  # a person in front of the car
    spec = {"classes": ["car", "person"], "other_labels": "ignore", "epochs": 1}  # the format is recognised
    task = registered(client, admin, post_export(client, admin, spec, export.entries()))
    assert task["classes"] == {"car": 1, "person": 2}
    expected = np.zeros((12, 16), np.uint8)
    expected[box(1, 2, 5, 6)] = 1
    expected[box(2, 3, 4, 5)] = 2
    expected[box(8, 0, 12, 3)] = 2
    expected[box(10, 6, 16, 12)] = 255
    assert (stored_mask(prepared, task, "a") == expected).all()
    report = task["import_report"]
    assert report["format"] == "coco" and report["images"] == 2 and report["class_images"] == {"car": 2, "person": 1}
    assert {i["kind"]: (i["count"], i.get("labels"), i.get("pixels")) for i in report["issues"]} == {
        "unknown_labels": (1, {"tree": 1}, 36), "overlaps_resolved": (1, None, 4)}


def test_a_coco_export_without_its_images_is_refused(client, prepared, admin):
    from tests.services.data.formats.test_coco import JSON, two_images

    refused = post_export(client, admin, {"classes": ["car", "person"], "format": "coco"},
                          {JSON: two_images().entries()[JSON]})
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "the COCO export lists 2 images the archive does not hold: a.jpg, b.png; export with the images (CVAT: tick "
        "\"Save images\"), or put them beside the JSON file or in images/")
    assert leftovers(prepared) == NOTHING


# --- COCO panoptic --------------------------------------------------------------------------------
def test_a_coco_panoptic_export(client, prepared, admin):
    from tests.services.data.formats.test_coco_panoptic import expected, two_images

    spec = {"classes": ["car", "person"], "other_labels": "background", "epochs": 1}
    task = registered(client, admin, post_export(client, admin, spec, two_images().entries()))
    assert task["classes"] == {"car": 1, "person": 2}
    assert (stored_mask(prepared, task, "000000000139") == expected(0)).all()  # void 255, the tree background
    report = task["import_report"]
    assert report["format"] == "coco_panoptic" and report["class_images"] == {"car": 2, "person": 1}
    assert [(i["kind"], i["labels"], i["pixels"]) for i in report["issues"]] == [
        ("unknown_labels", {"tree-merged": 1}, 30)]


# --- Label Studio brush ---------------------------------------------------------------------------
def label_studio_export():
    """Task 1: street.jpg with a car and a person brushed; task 2: an image nobody annotated."""
    from tests.services.data.formats import test_label_studio as ls
    from tests.services.data.formats.helpers import jpeg, photo

    tasks = [ls.street(), ls.task(2, "/data/upload/1/0a1b2c3d-alley.jpg", [])]
    return ls, tasks, {"street.jpg": jpeg(photo(ls.H, ls.W)), "alley.jpg": jpeg(photo(ls.H, ls.W, 1))}


def test_a_label_studio_brush_export(client, prepared, admin):
    ls, tasks, images = label_studio_export()
    spec = {"classes": ["car"], "other_labels": "ignore", "epochs": 1}  # the format is recognised
    task = registered(client, admin, post_export(client, admin, spec, ls.archive(tasks, images)))
    assert task["classes"] == {"car": 1}
    expected = np.zeros((ls.H, ls.W), np.uint8)
    expected[ls.CAR], expected[ls.PERSON] = 1, 255
    assert (stored_mask(prepared, task, "street") == expected).all()
    report = task["import_report"]
    assert report["format"] == "label_studio" and report["images"] == 1 and report["class_images"] == {"car": 1}
    assert {i["kind"]: (i["examples"], i.get("labels"), i.get("pixels")) for i in report["issues"]} == {
        "unknown_labels": (["street"], {"person": 1}, ls.H), "unused_files": (["alley.jpg"], None, None)}


def test_a_label_studio_export_with_a_broken_brush_is_refused(client, prepared, admin):
    ls, tasks, images = label_studio_export()
    tasks[0]["annotations"][0]["result"][1]["value"]["rle"] = ls.brush(ls.CAR)[:20]
    refused = post_export(client, admin, {"classes": ["car", "person"]}, ls.archive(tasks, images))
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith(
        "project-1-at-2024-05-02-09-20-4f2a/export.json: task 1, annotation 11, result 'Qw7pZ1': the brush RLE is "
        "not valid: ")
    assert leftovers(prepared) == NOTHING
