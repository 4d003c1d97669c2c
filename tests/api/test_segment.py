"""POST /models/{name}/segment through the real app (both flavours): JSON and PNG answers, the error
statuses, readiness around each model's production version, a promotion while clients keep
segmenting, two models served side by side, and keys limited to some models."""

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
from services.auth import create_key
from services.db.session import session_scope
from services.registry.classes import class_colour
from services.registry.models import get_model, get_models
from tests.conftest import bearer
from tests.services.inference.helpers import (
    checkpoint_of,
    png_bytes,
    publish,
    random_image,
)

V1 = {0: "background", 1: "cat", 2: "dog"}
V2 = {**V1, 3: "bird"}
# Another model that learnt the same names in another order: its "cat" is 2, its "dog" 1.
W1 = {0: "background", 1: "dog", 2: "cat"}
W2 = {**W1, 3: "fish"}
IMAGE = random_image(24, 16)
MODEL = "pets"


def make_key(client, scopes: list[str], models: list[str] | None = None) -> str:
    """A key straight in the app's database, for every model or only ``models`` (by name)."""
    with session_scope(client.app.state.strata.sessions) as s:
        _, plaintext = create_key(s, "test key", scopes, get_models(s, models) if models is not None else None)
    return plaintext


def new_model(client, admin: dict[str, str], name: str = MODEL) -> int:
    """Create a model through the API; returns its id (what the publishing helpers need)."""
    r = client.post("/models", json={"name": name}, headers=admin)
    assert r.status_code == 201, r.text
    with client.app.state.strata.sessions() as s:
        return get_model(s, name).id


@pytest.fixture
def infer(client) -> dict[str, str]:
    return bearer(make_key(client, ["infer"]))


@pytest.fixture
def admin(client) -> dict[str, str]:
    return bearer(make_key(client, ["admin"]))


@pytest.fixture
def model_id(client, admin) -> int:
    """The id of model "pets", created (with no version yet) through the API."""
    return new_model(client, admin)


def publish_in(client, prepared, model_id: int, **kw) -> int:
    state = client.app.state.strata
    return publish(state.sessions, state.store, prepared, model_id=model_id, **kw)


def segment(client, headers, data: bytes | None = None, *, model: str = MODEL, version: str | None = None,
            accept: str | None = None, filename: str = "photo.png"):
    params = {"version": version} if version else {}
    if accept:
        headers = {**headers, "Accept": accept}
    return client.post(f"/models/{model}/segment", params=params, headers=headers,
                       files={"image": (filename, png_bytes(IMAGE) if data is None else data, "image/png")})


def mask_of(answer: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))


def test_json_answer(client, prepared, infer, model_id):
    dog = publish_in(client, prepared, model_id, version=1, class_map=V1, winner=2)
    r = segment(client, infer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("model", "model_version", "width", "height", "classes")} == {
        "model": MODEL, "model_version": 1, "width": 24, "height": 16, "classes": {"dog": 24 * 16}}
    mask = mask_of(body)
    assert mask.format == "PNG" and mask.mode == "P" and mask.size == (24, 16)
    assert np.all(np.asarray(mask) == dog)
    assert tuple(mask.getpalette()[3 * dog: 3 * dog + 3]) == class_colour(dog)


def test_png_answer_and_other_image_formats(client, prepared, infer, model_id):
    cat = publish_in(client, prepared, model_id, version=1, class_map=V1, winner=1)
    r = segment(client, infer, accept="image/png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert (r.headers["x-model"], r.headers["x-model-version"]) == (MODEL, "1")
    png = Image.open(io.BytesIO(r.content))
    assert png.size == (24, 16) and np.all(np.asarray(png) == cat)

    jpeg = io.BytesIO()
    random_image(40, 30, seed=5).convert("L").save(jpeg, format="JPEG")  # greyscale: converted like evaluation
    r = segment(client, infer, jpeg.getvalue(), filename="grey.jpg")
    assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (40, 30)
    refused = segment(client, infer, accept="image/png;q=0, application/json")
    assert refused.headers["content-type"] == "application/json"


def test_an_explicit_version(client, prepared, infer, model_id):
    publish_in(client, prepared, model_id, version=1, class_map=V1, winner=1)
    bird = publish_in(client, prepared, model_id, version=2, class_map=V2, winner=3, parent=1, to_production=False)
    assert segment(client, infer).json()["model_version"] == 1
    for ref in ("2", "latest"):
        r = segment(client, infer, version=ref)
        assert r.status_code == 200 and r.json()["model_version"] == 2
        assert np.all(np.asarray(mask_of(r.json())) == bird) and r.json()["classes"] == {"bird": 24 * 16}


def test_a_model_with_no_version_yet_is_409(client, infer, model_id):
    r = segment(client, infer)
    assert r.status_code == 409 and r.json() == {"detail": f"model {MODEL!r}: no version has been trained yet"}


def test_versions_without_production_are_409_unless_named(client, prepared, infer, admin, model_id):
    publish_in(client, prepared, model_id, version=1, class_map=V1, winner=2, to_production=False)
    r = segment(client, infer)
    assert r.status_code == 409 and "has no version in production yet" in r.json()["detail"]
    assert segment(client, infer, version="1").json()["model_version"] == 1
    assert client.put(f"/models/{MODEL}/aliases/production", json={"version": 1}, headers=admin).status_code == 200
    r = segment(client, infer)
    assert r.status_code == 200 and r.json()["model_version"] == 1


def test_unknown_version_or_model_is_404(client, prepared, infer, model_id):
    publish_in(client, prepared, model_id, version=1, class_map=V1, winner=1)
    r = segment(client, infer, version="5")
    assert r.status_code == 404
    assert r.json()["detail"] == "model version 5 does not exist (known versions: 1; aliases: latest, production)"
    assert segment(client, infer, version="candidate").status_code == 404
    r = segment(client, infer, model="nope")
    assert r.status_code == 404 and r.json()["detail"].startswith("no model named 'nope'")


@pytest.mark.parametrize("data, message", [
    (b"this is text, not a picture", "'notes.png' is not an image (no decoder recognises it)"),
    (png_bytes(IMAGE)[:60], "'notes.png' cannot be decoded as an image"),
    (b"", "'notes.png' is empty"),
])
def test_not_an_image_is_422(client, prepared, infer, model_id, data, message):
    publish_in(client, prepared, model_id, version=1, class_map=V1, winner=1)
    r = segment(client, infer, data, filename="notes.png")
    assert r.status_code == 422 and r.json()["detail"].startswith(message), r.text


def test_a_missing_image_field_is_422(client, infer, model_id):
    r = client.post(f"/models/{MODEL}/segment", headers=infer,
                    files={"picture": ("x.png", png_bytes(IMAGE), "image/png")})
    assert r.status_code == 422 and "image" in r.text


def test_an_image_over_the_pixel_limit_is_413(prepared):
    small = prepared.model_copy(update={"max_image_pixels": 300})
    with TestClient(create_app(small)) as c:
        publish_in(c, prepared, new_model(c, bearer(make_key(c, ["admin"]))), version=1, class_map=V1, winner=1)
        r = segment(c, bearer(make_key(c, ["infer"])))
    assert r.status_code == 413
    assert r.json()["detail"] == ("'photo.png' is 24x16 = 384 pixels, over the limit of 300 "
                                  "(STRATA_MAX_IMAGE_PIXELS)")


def test_a_body_over_the_image_byte_limit_is_413_even_before_auth(prepared):
    """Segmenting has its own, tighter body limit: its form is parsed before the key is checked."""
    small = prepared.model_copy(update={"max_image_bytes": 2048})
    with TestClient(create_app(small)) as c:
        for model in (MODEL, "no-such-model"):  # no key at all, whatever the model
            r = c.post(f"/models/{model}/segment", files={"image": ("big.png", b"\0" * 4096, "image/png")})
            assert r.status_code == 413 and "STRATA_MAX_IMAGE_BYTES" in r.json()["detail"]
        # Other routes keep the upload limit.
        assert c.post(f"/models/{MODEL}/tasks", files={"archive": ("a.zip", b"\0" * 4096)}).status_code == 401


def test_segment_needs_the_infer_scope(client, admin, model_id):
    assert segment(client, {}).status_code == 401
    r = segment(client, admin)
    assert r.status_code == 403 and "scope 'infer'" in r.json()["detail"]
    r = segment(client, bearer(make_key(client, ["read"])))
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
    assert r.json()["checks"]["model"].startswith("no model exists yet") and r.json()["models"] == {}


def test_readyz_with_a_model_and_no_version_says_so(client, model_id):
    deadline = time.monotonic() + 30  # a model created while the API runs shows at the next look at the registry
    while MODEL not in (r := client.get("/readyz")).json()["models"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    assert r.json()["models"][MODEL].startswith("no version has been trained yet")


def test_readyz_waits_for_the_production_version(prepared):
    with TestClient(create_app(prepared)) as c:
        publish_in(c, prepared, new_model(c, bearer(make_key(c, ["admin"]))), version=1, class_map=V1, winner=1)
    with TestClient(create_app(prepared)) as c:  # a restart with a production version to load
        r = c.get("/readyz")
        if r.status_code == 503:  # not loaded yet: says which model and version it waits for
            assert r.json()["failing"] == ["model"]
            assert r.json()["checks"]["model"] == f"not serving yet: {MODEL}"
            assert r.json()["models"][MODEL] == "loading production version 1"
        r = wait_ready(c)
        assert r.status_code == 200 and r.json()["models"] == {MODEL: "serving production version 1"}


def test_readyz_fails_while_the_production_version_cannot_be_loaded(prepared):
    with TestClient(create_app(prepared)) as c:
        m = new_model(c, bearer(make_key(c, ["admin"])))
        publish_in(c, prepared, m, version=1, class_map=V1, winner=1)
        c.app.state.strata.store.delete(checkpoint_of(c.app.state.strata.sessions, m, 1))
    with TestClient(create_app(prepared)) as c:
        deadline = time.monotonic() + 60
        while "cannot be loaded" not in (body := c.get("/readyz").json())["models"][MODEL]:
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert body["failing"] == ["model"] and body["status"] == "unavailable"
        assert body["checks"]["model"] == f"not serving yet: {MODEL}"
        r = segment(c, bearer(make_key(c, ["infer"])))
        assert r.status_code == 503 and "model version 1 cannot be loaded" in r.json()["detail"]


def test_promotion_while_clients_segment(client, prepared, infer, admin, model_id):
    """Every request during the swap is answered (200), each entirely by one version."""
    answers = {1: publish_in(client, prepared, model_id, version=1, class_map=V1, winner=1),
               2: publish_in(client, prepared, model_id, version=2, class_map=V2, winner=3, parent=1,
                             to_production=False)}
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
        r = client.put(f"/models/{MODEL}/aliases/production", json={"version": 2}, headers=admin)
        assert r.status_code == 200 and r.json()["previous"] == 1
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
    # And back: a rollback is the same move.
    assert client.put(f"/models/{MODEL}/aliases/production", json={"version": 1}, headers=admin).status_code == 200
    deadline = time.monotonic() + 60
    while (version := segment(client, infer).json()["model_version"]) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert version == 1


def test_metrics_count_inference_batches(client, prepared, infer, model_id):
    publish_in(client, prepared, model_id, version=1, class_map=V1, winner=1)
    for _ in range(3):
        assert segment(client, infer).status_code == 200
    text = client.get("/metrics").text
    count = next(line for line in text.splitlines() if line.startswith("strata_inference_batch_size_count"))
    assert count.startswith(f'strata_inference_batch_size_count{{model="{MODEL}"}}')
    assert float(count.split()[-1]) >= 1
    assert 'route="/models/{name}/segment"' in text


# --- two models ------------------------------------------------------------------------------------
@pytest.fixture
def two_models(client, prepared, admin) -> dict[str, dict[int, int]]:
    """Models "a" and "b" with the same class names at other indices and the same version numbers:
    a serves v1 (cat = 1, v2 bird = 3 waits), b serves v1 (cat = 2, v2 fish = 3 waits).
    Returns {model: {version: the index its masks hold}}."""
    a, b = new_model(client, admin, "a"), new_model(client, admin, "b")
    return {
        "a": {1: publish_in(client, prepared, a, version=1, class_map=V1, winner=1),
              2: publish_in(client, prepared, a, version=2, class_map=V2, winner=3, parent=1, to_production=False)},
        "b": {1: publish_in(client, prepared, b, version=1, class_map=W1, winner=2),
              2: publish_in(client, prepared, b, version=2, class_map=W2, winner=3, parent=1, to_production=False)},
    }


def test_two_models_answer_each_with_its_own_classes(client, infer, admin, two_models):
    """No cross-talk: each answer names its model and version, and its mask holds that model's index
    for "cat" (1 in a, 2 in b), drawn in that index's colour."""
    assert two_models == {"a": {1: 1, 2: 3}, "b": {1: 2, 2: 3}}
    for model in ("a", "b", "a", "b"):
        r = segment(client, infer, model=model)
        assert r.status_code == 200, r.text
        body = r.json()
        expected = two_models[model][1]
        assert (body["model"], body["model_version"], body["classes"]) == (model, 1, {"cat": 24 * 16})
        mask = mask_of(body)
        assert set(np.unique(np.asarray(mask)).tolist()) == {expected}
        assert tuple(mask.getpalette()[3 * expected: 3 * expected + 3]) == class_colour(expected)
        png = segment(client, infer, model=model, accept="image/png")
        assert (png.headers["x-model"], png.headers["x-model-version"]) == (model, "1")
        assert set(np.unique(np.asarray(Image.open(io.BytesIO(png.content)))).tolist()) == {expected}
    cats = {m: [c for c in client.get(f"/models/{m}/classes", headers=infer).json() if c["name"] == "cat"]
            for m in ("a", "b")}
    assert [c["index"] for c in cats["a"]] == [1] and [c["index"] for c in cats["b"]] == [2]
    assert cats["a"][0]["color"] != cats["b"][0]["color"]
    # Explicit versions and aliases are the model's own too.
    r = segment(client, infer, model="b", version="latest")
    assert (r.json()["model"], r.json()["model_version"], r.json()["classes"]) == ("b", 2, {"fish": 24 * 16})
    r = segment(client, infer, model="a", version="2")
    assert (r.json()["model"], r.json()["model_version"], r.json()["classes"]) == ("a", 2, {"bird": 24 * 16})


def test_promoting_one_model_leaves_the_other_serving(client, infer, admin, two_models):
    for model in ("a", "b"):  # both production versions loaded before the clients start
        assert segment(client, infer, model=model).json()["model_version"] == 1
    results: dict[str, list[tuple[int, str | None, int | None, tuple]]] = {"a": [], "b": []}
    stop = threading.Event()

    def hammer(model: str) -> None:
        while not stop.is_set():
            r = segment(client, infer, model=model)
            body = r.json() if r.status_code == 200 else {}
            values = tuple(np.unique(np.asarray(mask_of(body))).tolist()) if body else ()
            results[model].append((r.status_code, body.get("model"), body.get("model_version"), values))

    threads = [threading.Thread(target=hammer, args=(m,)) for m in ("a", "b", "a", "b")]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        assert client.put("/models/b/aliases/production", json={"version": 2}, headers=admin).status_code == 200
        deadline = time.monotonic() + 60
        while sum(v == 2 for *_, v, _ in results["b"]) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert set(results["a"]) == {(200, "a", 1, (two_models["a"][1],))}
    assert set(results["b"]) == {(200, "b", 1, (two_models["b"][1],)), (200, "b", 2, (two_models["b"][2],))}
    aliases = {m: {x["name"]: x["version"] for x in client.get(f"/models/{m}/aliases", headers=infer).json()}
               for m in ("a", "b")}
    assert aliases == {"a": {"latest": 2, "production": 1}, "b": {"latest": 2, "production": 2}}


def test_a_key_limited_to_one_model_cannot_segment_another(client, infer, two_models):
    only_a = bearer(make_key(client, ["infer"], models=["a"]))
    r = segment(client, only_a, model="a")
    assert r.status_code == 200 and r.json()["model"] == "a"
    r = segment(client, only_a, model="b")
    assert r.status_code == 403 and "not allowed to use model 'b'" in r.json()["detail"]
    r = segment(client, only_a, model="b", version="1")
    assert r.status_code == 403
    assert segment(client, infer, model="b").status_code == 200  # a key for every model may
