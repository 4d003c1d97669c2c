"""Validation samples of a version through the real app (both flavours): GET
/models/{name}/versions/{v}/samples, GET /models/{name}/items/{id}/image and .../mask.

The versions are published as the worker publishes them (tests/api/test_models.py: ``finish``),
from tasks registered through the API with images and local masks made here, so what comes back
can be compared with what went in.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from services.db.models import DatasetItem
from services.registry.classes import class_colour
from tests.api.test_auth import bearer, make_key
from tests.api.test_models import ARCH, finish, new_model

N_IMAGES = 4  # per task; val_fraction 0.5 keeps 2 of them for validation


def encode(array: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def local_mask(i: int, n_labels: int) -> np.ndarray:
    """Rows of every local value 1..n_labels, and an ignored corner (255)."""
    mask = np.zeros((12, 16), np.uint8)
    for k in range(1, n_labels + 1):
        mask[(i + 3 * k) % 12] = k
    mask[:2, :2] = 255
    return mask


def post_task(client, headers, model: str, classes: list[str], also: list[str] = (), **spec) -> tuple[str, dict]:
    """A task with N_IMAGES images (even ones PNG, odd ones JPEG) and their local masks; returns its
    id and {stem: (image bytes, local mask)}."""
    uploaded, parts = {}, []
    for i in range(N_IMAGES):
        image = np.random.default_rng(i).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
        stem, data, mask = f"img{i}", encode(image, fmt), local_mask(i, len(classes) + len(also))
        uploaded[stem] = (data, mask)
        parts += [("images", (f"{stem}.{ext}", data, f"image/{fmt.lower()}")),
                  ("masks", (f"{stem}.png", encode(mask, "PNG"), "image/png"))]
    body = {"classes": classes, "also_labelled": list(also), "architecture": ARCH, "val_fraction": 0.5, **spec}
    r = client.post(f"/models/{model}/tasks", data={"spec": json.dumps(body)}, files=parts, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["id"], uploaded


def items_of(client, task_id: str, split: str | None = None) -> list[DatasetItem]:
    with client.app.state.strata.sessions() as s:
        stmt = select(DatasetItem).where(DatasetItem.task_id == task_id).order_by(DatasetItem.id)
        return list(s.scalars(stmt if split is None else stmt.where(DatasetItem.split == split)))


@pytest.fixture
def tasks(client, admin) -> dict[str, tuple[str, dict]]:
    """Model "m": v1 from task "a" (car 1, bus 2) -> v2 from task "b" (van 3; its masks also label
    car: local 1 = van, 2 = car). Model "other": a registered task of its own."""
    new_model(client, admin)
    new_model(client, admin, "other")
    a = post_task(client, admin, "m", ["car", "bus"])
    assert finish(client, a[0]) == 1
    b = post_task(client, admin, "m", ["van"], also=["car"])
    assert finish(client, b[0]) == 2
    return {"a": a, "b": b, "other": post_task(client, admin, "other", ["tree"])}


def samples(client, headers, ref, **params):
    return client.get(f"/models/m/versions/{ref}/samples", params=params, headers=headers)


def test_samples_take_the_lineages_tasks_in_turn(client, reader, tasks):
    (a, _), (b, _) = tasks["a"], tasks["b"]
    val_a, val_b = items_of(client, a, "val"), items_of(client, b, "val")
    assert len(val_a) == len(val_b) == 2
    r = samples(client, reader, 2)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"id": val_b[0].id, "task_id": b, "stem": val_b[0].stem, "classes": ["van"]},
        {"id": val_a[0].id, "task_id": a, "stem": val_a[0].stem, "classes": ["car", "bus"]},
        {"id": val_b[1].id, "task_id": b, "stem": val_b[1].stem, "classes": ["van"]},
        {"id": val_a[1].id, "task_id": a, "stem": val_a[1].stem, "classes": ["car", "bus"]},
    ]
    assert samples(client, reader, "production").json() == r.json()  # an alias, as every version route
    assert [s["id"] for s in samples(client, reader, 2, limit=3).json()] == [val_b[0].id, val_a[0].id, val_b[1].id]
    assert [s["id"] for s in samples(client, reader, 2, limit=1).json()] == [val_b[0].id]
    # Version 1's lineage is task a alone; validation items only.
    assert [s["id"] for s in samples(client, reader, 1).json()] == [i.id for i in val_a]


def test_bad_sample_requests(client, reader, tasks):
    r = samples(client, reader, 9)
    assert r.status_code == 404 and "model version 9 does not exist" in r.json()["detail"]
    assert samples(client, reader, "staging").status_code == 404
    assert samples(client, reader, "1.5").status_code == 422
    for limit in (0, 51, "x"):
        r = samples(client, reader, 2, limit=limit)
        assert r.status_code == 422 and "limit" in r.json()["detail"], r.text
    assert client.get("/models/nope/versions/1/samples", headers=reader).status_code == 404


def test_an_image_comes_back_as_uploaded(client, reader, tasks):
    task_id, uploaded = tasks["a"]
    for item in items_of(client, task_id):  # any item of the model, training ones too
        r = client.get(f"/models/m/items/{item.id}/image", headers=reader)
        assert r.status_code == 200, r.text
        assert r.content == uploaded[item.stem][0]
        assert r.headers["content-type"] == ("image/png" if item.stem in ("img0", "img2") else "image/jpeg")
        assert r.headers["cache-control"] == "private, max-age=3600"


@pytest.mark.parametrize("task, lut", [
    ("a", {0: 0, 1: 1, 2: 2, 255: 255}),  # car, bus: 1 and 2 both locally and in the model
    ("b", {0: 0, 1: 3, 2: 1, 255: 255}),  # local 1 = van (3 in the model), 2 = car (also labelled: 1)
])
def test_a_mask_comes_back_in_the_models_class_indices(client, reader, tasks, task, lut):
    task_id, uploaded = tasks[task]
    for item in items_of(client, task_id):
        r = client.get(f"/models/m/items/{item.id}/mask", headers=reader)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png" and r.headers["cache-control"] == "private, max-age=3600"
        png = Image.open(io.BytesIO(r.content))
        assert png.mode == "P"
        local = uploaded[item.stem][1]
        expected = np.vectorize(lut.__getitem__, otypes=[np.uint8])(local)
        assert np.array_equal(np.asarray(png), expected)
        palette = png.getpalette()
        for index in set(lut.values()) - {255}:  # the legend colours of /classes and /segment
            assert tuple(palette[3 * index: 3 * index + 3]) == class_colour(index)


def test_items_of_another_model_are_not_found(client, reader, tasks):
    other = items_of(client, tasks["other"][0])[0].id
    mine = items_of(client, tasks["a"][0])[0].id
    for kind in ("image", "mask"):
        r = client.get(f"/models/m/items/{other}/{kind}", headers=reader)
        assert r.status_code == 404 and r.json()["detail"] == f"model 'm' has no dataset item {other}"
        assert client.get(f"/models/other/items/{other}/{kind}", headers=reader).status_code == 200
        assert client.get(f"/models/other/items/{mine}/{kind}", headers=reader).status_code == 404
        assert client.get(f"/models/m/items/{10**6}/{kind}", headers=reader).status_code == 404
        for outside in (2**31, 10**20, 0, -1):  # past the column, or no id at all: refused at the edge
            assert client.get(f"/models/m/items/{outside}/{kind}", headers=reader).status_code == 422, outside
        assert client.get(f"/models/m/items/x/{kind}", headers=reader).status_code == 422


def test_samples_need_a_key_for_the_model(client, tasks):
    item = items_of(client, tasks["a"][0])[0].id
    urls = ["/models/m/versions/1/samples", f"/models/m/items/{item}/image", f"/models/m/items/{item}/mask"]
    limited = bearer(make_key(client, ["read"], "other's reader", models=["other"]))
    read_m = bearer(make_key(client, ["read"], "m's reader", models=["m"]))
    for url in urls:
        assert client.get(url).status_code == 401
        r = client.get(url, headers=limited)
        assert r.status_code == 403 and "not allowed to use model 'm'" in r.json()["detail"], r.text
        assert client.get(url, headers=read_m).status_code == 200


def test_round_robin_passes_over_a_queue_that_ran_out():
    from services.jobs.samples import round_robin

    assert round_robin([[1, 2, 3], [], [4]], 10) == [1, 4, 2, 3]
    assert round_robin([[1, 2, 3], [], [4]], 2) == [1, 4]
    assert round_robin([], 5) == []
