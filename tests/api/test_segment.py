"""POST /segment through the real app (both flavours): JSON and PNG answers, the error statuses,
readiness around the production model, and a promotion while clients keep segmenting."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from services.registry.classes import class_colour
from tests.api.test_auth import bearer, make_key
from tests.services.inference.helpers import png_bytes, publish, random_image

V1 = {0: "background", 1: "cat", 2: "dog"}
V2 = {**V1, 3: "bird"}
IMAGE = random_image(24, 16)


@pytest.fixture
def infer(client) -> dict[str, str]:
    return bearer(make_key(client, ["infer"]))


@pytest.fixture
def admin(client) -> dict[str, str]:
    return bearer(make_key(client, ["admin"]))


def publish_in(client, prepared, **kw) -> int:
    state = client.app.state.strata
    return publish(state.sessions, state.store, prepared, **kw)


def segment(client, headers, data: bytes | None = None, *, version: str | None = None, accept: str | None = None,
            filename: str = "photo.png"):
    params = {"version": version} if version else {}
    if accept:
        headers = {**headers, "Accept": accept}
    return client.post("/segment", params=params, headers=headers,
                       files={"image": (filename, png_bytes(IMAGE) if data is None else data, "image/png")})


def mask_of(answer: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))


def test_json_answer(client, prepared, infer):
    dog = publish_in(client, prepared, version=1, class_map=V1, winner=2)
    r = segment(client, infer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("model_version", "width", "height", "classes")} == {
        "model_version": 1, "width": 24, "height": 16, "classes": {"dog": 24 * 16}}
    mask = mask_of(body)
    assert mask.format == "PNG" and mask.mode == "P" and mask.size == (24, 16)
    assert np.all(np.asarray(mask) == dog)
    assert tuple(mask.getpalette()[3 * dog: 3 * dog + 3]) == class_colour(dog)


def test_png_answer_and_other_image_formats(client, prepared, infer):
    cat = publish_in(client, prepared, version=1, class_map=V1, winner=1)
    r = segment(client, infer, accept="image/png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-model-version"] == "1"
    png = Image.open(io.BytesIO(r.content))
    assert png.size == (24, 16) and np.all(np.asarray(png) == cat)

    jpeg = io.BytesIO()
    random_image(40, 30, seed=5).convert("L").save(jpeg, format="JPEG")  # greyscale: converted like evaluation
    r = segment(client, infer, jpeg.getvalue(), filename="grey.jpg")
    assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (40, 30)
    refused = segment(client, infer, accept="image/png;q=0, application/json")
    assert refused.headers["content-type"] == "application/json"


def test_an_explicit_version(client, prepared, infer):
    publish_in(client, prepared, version=1, class_map=V1, winner=1)
    bird = publish_in(client, prepared, version=2, class_map=V2, winner=3, parent=1, to_production=False)
    assert segment(client, infer).json()["model_version"] == 1
    for ref in ("2", "latest"):
        r = segment(client, infer, version=ref)
        assert r.status_code == 200 and r.json()["model_version"] == 2
        assert np.all(np.asarray(mask_of(r.json())) == bird) and r.json()["classes"] == {"bird": 24 * 16}


def test_no_model_yet_is_409(client, infer):
    r = segment(client, infer)
    assert r.status_code == 409 and r.json() == {"detail": "no model has been trained yet"}


def test_unknown_version_is_404(client, prepared, infer):
    publish_in(client, prepared, version=1, class_map=V1, winner=1)
    r = segment(client, infer, version="5")
    assert r.status_code == 404 and r.json()["detail"] == "model version 5 does not exist (known versions: 1)"
    assert segment(client, infer, version="candidate").status_code == 404


@pytest.mark.parametrize("data, message", [
    (b"this is text, not a picture", "'notes.png' is not an image (no decoder recognises it)"),
    (png_bytes(IMAGE)[:60], "'notes.png' cannot be decoded as an image"),
    (b"", "'notes.png' is empty"),
])
def test_not_an_image_is_422(client, prepared, infer, data, message):
    publish_in(client, prepared, version=1, class_map=V1, winner=1)
    r = segment(client, infer, data, filename="notes.png")
    assert r.status_code == 422 and r.json()["detail"].startswith(message), r.text


def test_a_missing_image_field_is_422(client, infer):
    r = client.post("/segment", headers=infer, files={"picture": ("x.png", png_bytes(IMAGE), "image/png")})
    assert r.status_code == 422 and "image" in r.text


def test_an_image_over_the_pixel_limit_is_413(prepared):
    small = prepared.model_copy(update={"max_image_pixels": 300})
    with TestClient(create_app(small)) as c:
        publish_in(c, prepared, version=1, class_map=V1, winner=1)
        r = segment(c, bearer(make_key(c, ["infer"])))
    assert r.status_code == 413
    assert r.json()["detail"] == ("'photo.png' is 24x16 = 384 pixels, over the limit of 300 "
                                  "(STRATA_MAX_IMAGE_PIXELS)")


def test_a_body_over_the_image_byte_limit_is_413_even_before_auth(prepared):
    """/segment has its own, tighter body limit: its form is parsed before the key is checked."""
    small = prepared.model_copy(update={"max_image_bytes": 2048})
    with TestClient(create_app(small)) as c:
        r = c.post("/segment", files={"image": ("big.png", b"\0" * 4096, "image/png")})  # no key at all
        assert r.status_code == 413 and "STRATA_MAX_IMAGE_BYTES" in r.json()["detail"]
        # Other routes keep the upload limit.
        assert c.post("/tasks", files={"archive": ("a.zip", b"\0" * 4096)}).status_code == 401


def test_segment_needs_the_infer_scope(client, admin):
    assert segment(client, {}).status_code == 401
    r = segment(client, admin)
    assert r.status_code == 403 and "scope 'infer'" in r.json()["detail"]


def wait_ready(c, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/readyz")
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_readyz_with_no_model_says_so(client):
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["model"].startswith("no model has been trained yet")


def test_readyz_waits_for_the_production_model(prepared):
    with TestClient(create_app(prepared)) as c:
        publish_in(c, prepared, version=1, class_map=V1, winner=1)
    with TestClient(create_app(prepared)) as c:  # a restart with a production version to load
        r = c.get("/readyz")
        if r.status_code == 503:  # not loaded yet: says which version it waits for
            assert r.json()["failing"] == ["model"]
            assert r.json()["checks"]["model"].startswith("production model version 1 is not loaded")
        r = wait_ready(c)
        assert r.status_code == 200 and r.json()["checks"]["model"] == "serving production model version 1"


def test_readyz_fails_while_the_production_model_cannot_be_loaded(prepared):
    with TestClient(create_app(prepared)) as c:
        publish_in(c, prepared, version=1, class_map=V1, winner=1)
        c.app.state.strata.store.delete("checkpoints/1/model.pt")
    with TestClient(create_app(prepared)) as c:
        deadline = time.monotonic() + 60
        while "cannot be loaded" not in (body := c.get("/readyz").json())["checks"]["model"]:
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert body["failing"] == ["model"] and body["status"] == "unavailable"
        r = segment(c, bearer(make_key(c, ["infer"])))
        assert r.status_code == 503 and "model version 1 cannot be loaded" in r.json()["detail"]


def test_promotion_while_clients_segment(client, prepared, infer, admin):
    """Every request during the swap is answered (200), each entirely by one version."""
    answers = {1: publish_in(client, prepared, version=1, class_map=V1, winner=1),
               2: publish_in(client, prepared, version=2, class_map=V2, winner=3, parent=1, to_production=False)}
    names = {1: "cat", 3: "bird"}
    assert segment(client, infer).json()["model_version"] == 1
    results: list[tuple[int, int, dict, set]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = segment(client, infer)
            body = r.json() if r.status_code == 200 else {}
            values = set(np.unique(np.asarray(mask_of(body))).tolist()) if body else set()
            results.append((r.status_code, body.get("model_version"), body.get("classes"), values))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        assert client.post("/models/2/promote", headers=admin).status_code == 200
        deadline = time.monotonic() + 60
        while sum(v == 2 for _, v, _, _ in results) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert [code for code, *_ in results if code != 200] == []
    assert {v for _, v, _, _ in results} == {1, 2}
    for _, version, classes, values in results:
        assert values == {answers[version]}
        assert classes == {names[answers[version]]: 24 * 16}
    assert segment(client, infer).json()["model_version"] == 2


def test_metrics_count_inference_batches(client, prepared, infer):
    publish_in(client, prepared, version=1, class_map=V1, winner=1)
    for _ in range(3):
        assert segment(client, infer).status_code == 200
    text = client.get("/metrics").text
    count = next(line for line in text.splitlines() if line.startswith("strata_inference_batch_size_count"))
    assert float(count.split()[-1]) >= 1
    assert 'route="/segment"' in text
