"""POST /models/{name}/segment's answers besides today's JSON and PNG (issue 12): ``format=rle`` (each
class as a COCO region, decoded with pycocotools) and ``render=overlay`` (the image blended with the
class colours), how ``format``, ``render``, ``alpha`` and Accept combine, and the clashes refused.

The version is a real LR-ASPP network with random weights (seeded) and no classifier bias, so each
pixel's class follows the image's features: its mask holds every class in irregular regions. Every
answer is checked against the default JSON answer's mask.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from services.learning.zoo import build_model
from services.registry.classes import class_colour
from tests.api.test_segment import MODEL, make_key, mask_of, new_model, publish_in
from tests.conftest import bearer
from tests.services.inference.helpers import ARCH, png_bytes, random_image

CLASSES = {0: "background", 1: "cat", 2: "dog"}
IMAGE = random_image(48, 32, seed=7)


@pytest.fixture
def infer(client) -> dict[str, str]:
    return bearer(make_key(client, ["infer"]))


@pytest.fixture
def served(client, prepared) -> None:
    """Model "pets" whose production version 1 is a seeded, untrained network (see the module's doc)."""
    model_id = new_model(client, bearer(make_key(client, ["admin"])))
    torch.manual_seed(0)
    network = build_model(ARCH, len(CLASSES)).eval()
    with torch.no_grad():  # random init's biases would outvote the features: one class everywhere
        network.classifier.low_classifier.bias.zero_()
        network.classifier.high_classifier.bias.zero_()
    publish_in(client, prepared, model_id, version=1, class_map=CLASSES, winner=0, model=network)


def segment(client, headers, accept: str | None = None, **params):
    headers = {**headers, "Accept": accept} if accept else headers
    return client.post(f"/models/{MODEL}/segment", params=params, headers=headers,
                       files={"image": ("photo.png", png_bytes(IMAGE), "image/png")})


def default_answer(client, infer) -> tuple[dict, np.ndarray]:
    r = segment(client, infer)
    assert r.status_code == 200, r.text
    mask = np.asarray(mask_of(r.json()))
    assert set(r.json()["classes"]) == set(CLASSES.values()), "the network should predict every class here"
    return r.json(), mask


def test_rle_decodes_to_the_default_answers_mask(client, infer, served):
    body, mask = default_answer(client, infer)
    r = segment(client, infer, format="rle")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    rle = r.json()
    assert {k: rle[k] for k in ("model", "model_version", "width", "height")} == {
        "model": MODEL, "model_version": 1, "width": 48, "height": 32}
    present = sorted(int(i) for i in np.unique(mask))
    assert [c["index"] for c in rle["classes"]] == present  # every class present, background too
    cover = np.zeros(mask.shape, dtype=int)
    for region in rle["classes"]:
        assert region["name"] == CLASSES[region["index"]]
        assert region["rle"]["size"] == [32, 48] and isinstance(region["rle"]["counts"], str)
        binary = coco_mask.decode(region["rle"])
        assert np.array_equal(binary, (mask == region["index"]).astype(np.uint8)), region["name"]
        assert region["area"] == body["classes"][region["name"]] == int(binary.sum())
        rows, cols = np.nonzero(binary)
        x, y = int(cols.min()), int(rows.min())
        assert region["bbox"] == [x, y, int(cols.max()) - x + 1, int(rows.max()) - y + 1]
        cover += binary
    assert np.all(cover == 1)  # the regions tile the image


def test_overlay_blends_the_image_with_the_class_colours(client, infer, served):
    _, mask = default_answer(client, infer)
    pixels = np.asarray(IMAGE, dtype=float)
    for params, alpha in (({}, 0.5), ({"alpha": 0.25}, 0.25), ({"alpha": 1}, 1.0), ({"alpha": 0}, 0.0)):
        r = segment(client, infer, render="overlay", **params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        assert (r.headers["x-model"], r.headers["x-model-version"]) == (MODEL, "1")
        overlay = Image.open(io.BytesIO(r.content))
        assert overlay.size == IMAGE.size and overlay.mode == "RGB"
        out = np.asarray(overlay)
        for index in np.unique(mask):
            where = mask == index
            expected = np.rint(alpha * np.array(class_colour(int(index)), dtype=float) + (1 - alpha) * pixels[where])
            assert np.array_equal(out[where], expected.astype(np.uint8)), (alpha, index)


def test_format_and_accept_choose_the_answer(client, infer, served):
    body, mask = default_answer(client, infer)
    as_png = segment(client, infer, accept="image/png").content
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(as_png))), mask)
    assert segment(client, infer, format="png").content == as_png  # format=png is Accept: image/png
    explicit = segment(client, infer, format="json", accept="image/png")  # an explicit format wins
    assert explicit.headers["content-type"] == "application/json" and explicit.json() == body
    assert segment(client, infer, format="rle", accept="image/png").json()["classes"][0]["rle"]
    overlay = segment(client, infer, render="overlay").content
    for params in ({"format": "png"}, {}):  # the overlay is a PNG whatever Accept says
        r = segment(client, infer, accept="application/json", render="overlay", **params)
        assert r.headers["content-type"] == "image/png" and r.content == overlay
    r = segment(client, infer, render="mask", format="png")
    assert r.headers["content-type"] == "image/png" and r.content == as_png


@pytest.mark.parametrize("params, where, words", [
    ({"render": "overlay", "format": "rle"}, "query.render", "cannot be format=rle"),
    ({"render": "overlay", "format": "json"}, "query.render", "cannot be format=json"),
    ({"alpha": 0.5}, "query.alpha", "send it with render=overlay"),
    ({"alpha": 0.5, "format": "rle"}, "query.alpha", "send it with render=overlay"),
    ({"alpha": 0.5, "render": "mask"}, "query.alpha", "send it with render=overlay"),
    ({"render": "overlay", "alpha": 1.5}, "query.alpha", "less than or equal to 1"),
    ({"render": "overlay", "alpha": -0.1}, "query.alpha", "greater than or equal to 0"),
    ({"render": "overlay", "alpha": "nan"}, "query.alpha", ""),
    ({"format": "tiff"}, "query.format", "'json', 'png' or 'rle'"),
    ({"render": "heatmap"}, "query.render", "'mask' or 'overlay'"),
])
def test_clashing_or_bad_options_are_422_naming_the_parameter(client, infer, served, params, where, words):
    r = segment(client, infer, **params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{where}: ") and words in r.json()["detail"], r.json()


def test_options_are_checked_before_the_body_is_read(client, infer, served):
    """A clash is answered without reading the upload: even no image at all gets the query's error."""
    r = client.post(f"/models/{MODEL}/segment", params={"render": "overlay", "format": "rle"}, headers=infer)
    assert r.status_code == 422 and r.json()["detail"].startswith("query.render: ")
