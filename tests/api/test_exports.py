"""GET /models/{name}/versions/{v}/export through the real app (both flavours): the ONNX and
TorchScript files reproduce /segment's masks when used as a user would, from their metadata alone;
the Triton repository; the cache; deletion with the version; the errors.

The version is a real LR-ASPP network (``varied_model``) whose answer depends on the image, so the
masks compared have several classes and many boundaries. The reproduction (``reproduce``) reads
the contract from the file, preprocesses with PIL and NumPy, runs the file in its runtime at the
preprocessed size, resizes the logits back to the image's size (NumPy, as the contract says), takes
the argmax and maps channels to class indices. It must give /segment's mask on every pixel but near-ties: pixels whose
top two (upsampled) logits are within 2 x LOGITS_RTOL x the largest |logit|, where float rounding
in another runtime may pick either class; and those must be at most 0.1 % of the pixels.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image, ImageDraw
from sqlalchemy import select

from services.db.models import ModelVersion, Task, VersionExport
from services.db.session import session_scope
from services.inference.export import CONTRACT, LOGITS_RTOL
from services.jobs import lifecycle
from services.learning.zoo import build_model
from services.registry.models import get_model
from services.storage.keys import model_prefix
from tests.services.inference.helpers import ARCH, create_model, png_bytes, publish

MODEL = "pets"
V1 = {0: "background", 1: "cat", 2: "dog"}
V2 = {**V1, 5: "bird"}  # channel 3 is class 5: the channel -> index table matters
IMAGE_SIZE = 40  # the shorter side /segment resizes to
TIE_SHARE = 1e-3


def varied_model(num_classes: int, seed: int) -> torch.nn.Module:
    """A real LR-ASPP with random weights whose answer depends on the image: the classifier's biases
    zeroed (they alone decide an untrained network's argmax) and its weights scaled so logits span
    a few units, like a trained network's."""
    torch.manual_seed(seed)
    model = build_model(ARCH, num_classes).eval()
    with torch.no_grad():
        for conv in (model.classifier.low_classifier, model.classifier.high_classifier):
            conv.bias.zero_()
            conv.weight.mul_(1000)
    return model


def scene(width: int, height: int, seed: int) -> Image.Image:
    """Coloured shapes on a gradient: regions with edges, unlike noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1, (1, 1, 3))
    image = Image.fromarray(np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        box = (x0, y0, x0 + rng.integers(4, width), y0 + rng.integers(4, height))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


@pytest.fixture
def pets(client, prepared) -> int:
    """Model "pets": version 1 (production), version 2 (adds "bird" as class 5), both varied networks."""
    state = client.app.state.strata
    model_id = create_model(state.sessions, MODEL)
    # Version 2's seed: its masks of the scenes below show every class, each on thousands of pixels.
    for version, classes, parent, seed in ((1, V1, None, 3), (2, V2, 1, 9)):
        publish(state.sessions, state.store, prepared, model_id=model_id, version=version, class_map=classes, winner=0,
                parent=parent, image_size=IMAGE_SIZE, to_production=version == 1,
                model=varied_model(len(classes), seed=seed))
    with session_scope(state.sessions) as s:
        for task in s.scalars(select(Task).where(Task.model_id == model_id)):
            lifecycle.succeed(task)  # as a worker leaves them: a version can then be deleted
    return model_id


def get_export(client, headers, version="2", format: str | None = "onnx", model=MODEL):
    params = {} if format is None else {"format": format}
    return client.get(f"/models/{model}/versions/{version}/export", params=params, headers=headers)


# --- what a user of the file does ----------------------------------------------------------------
def preprocess(image: Image.Image, pre: dict) -> np.ndarray:
    """float32 [3, h, w] as the contract's preprocessing says."""
    image = image.convert("RGB")
    size, cap = pre["shorter_side"], pre["max_aspect"]
    width, height = image.size
    short, long = min(width, height), max(width, height)
    scale = min(size / short, size * cap / long)
    new_short = size if scale == size / short else max(1, round(short * scale))
    new_long = max(1, round(long * scale))
    new_size = (new_long, new_short) if height <= width else (new_short, new_long)  # PIL: (width, height)
    if new_size != image.size:
        image = image.resize(new_size, Image.BILINEAR)
    x = np.asarray(image, dtype=np.float32) / np.float32(255)
    x = (x - np.asarray(pre["mean"], dtype=np.float32)) / np.asarray(pre["std"], dtype=np.float32)
    return x.transpose(2, 0, 1)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """[C, h, w] -> [C, height, width]: bilinear, half-pixel centres, no antialiasing."""
    def taps(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(out) + 0.5) * (size / out) - 0.5, 0)
        low = np.minimum(src.astype(int), size - 1)
        return low, np.minimum(low + 1, size - 1), (src - low).astype(np.float32)

    (y0, y1, fy), (x0, x1, fx) = taps(height, x.shape[1]), taps(width, x.shape[2])
    rows = x[:, y0] * (1 - fy)[:, None] + x[:, y1] * fy[:, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def answer_at(logits: np.ndarray, size: tuple[int, int], channels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(class index mask [H, W], resized logits [C, H, W]) at ``size`` (width, height): argmax, channel -> index."""
    resized = resize_bilinear(logits, size[1], size[0])
    return np.asarray(channels, dtype=np.uint8)[resized.argmax(axis=0)], resized


def reproduce(run, meta: dict, images: list[Image.Image]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One batch (the images preprocess to one size): each image's mask and logits at its own size."""
    batch = np.stack([preprocess(im, meta["preprocessing"]) for im in images])
    logits, mask = run(batch)
    assert logits.shape == (len(images), len(meta["channels"]), *batch.shape[2:]) and mask.dtype == np.uint8
    # The graph's own mask is the same argmax at the preprocessed size.
    assert np.array_equal(mask, np.asarray(meta["channels"], dtype=np.uint8)[logits.argmax(axis=1)])
    return [answer_at(one, im.size, meta["channels"]) for one, im in zip(logits, images)]


def onnx_runner(data: bytes):
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["strata"])
    assert [i.name for i in session.get_inputs()] == [i["name"] for i in meta["inputs"]]
    return (lambda batch: session.run(["logits", "mask"], {"image": batch})), meta


def torchscript_runner(data: bytes):
    extra = {"strata.json": ""}
    module = torch.jit.load(io.BytesIO(data), _extra_files=extra)
    meta = json.loads(extra["strata.json"])

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in module(torch.from_numpy(batch))]

    return run, meta


def segment_mask(client, headers, image: Image.Image) -> np.ndarray:
    r = client.post(f"/models/{MODEL}/segment", params={"version": "2", "format": "png"}, headers=headers,
                    files={"image": ("scene.png", png_bytes(image), "image/png")})
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)))


def assert_same_answer(mask: np.ndarray, logits: np.ndarray, expected: np.ndarray) -> None:
    """``mask`` is /segment's ``expected`` on every pixel but near-ties of ``logits``, at most TIE_SHARE of them."""
    assert mask.shape == expected.shape
    tolerance = LOGITS_RTOL * max(1.0, float(np.abs(logits).max()))
    top2 = np.sort(logits, axis=0)[-2:]
    differ = mask != expected
    assert not (differ & (top2[1] - top2[0] > 2 * tolerance)).any()
    assert differ.mean() <= TIE_SHARE


# (width, height) of the uploads: shorter side below, at and above IMAGE_SIZE, sizes that preprocess
# to non-multiples of the stride, and a 9:1 strip past MAX_ASPECT.
SIZES = [(24, 16), (64, 40), (97, 53), (45, 130), (360, 40)]


@pytest.mark.parametrize("format, runner", [("onnx", onnx_runner), ("torchscript", torchscript_runner)])
def test_the_file_reproduces_segment_from_its_metadata(client, reader, pets, format, runner):
    r = get_export(client, reader, format=format)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    extension = {"onnx": "onnx", "torchscript": "pt"}[format]
    assert r.headers["content-disposition"] == f'attachment; filename="{MODEL}-v2.{extension}"'
    digest = r.headers["x-content-sha256"]
    assert r.headers["etag"] == f'"{digest}"' and (r.headers["x-model"], r.headers["x-model-version"]) == (MODEL, "2")
    assert hashlib.sha256(r.content).hexdigest() == digest
    run, meta = runner(r.content)
    assert (meta["model"], meta["version"], meta["architecture"]) == (MODEL, 2, ARCH)
    assert meta["channels"] == [0, 1, 2, 5] and meta["preprocessing"]["shorter_side"] == IMAGE_SIZE
    assert {c["index"]: c["name"] for c in meta["classes"]} == V2

    seen = set()
    for i, size in enumerate(SIZES):  # batches of one, each image at its own size
        [(mask, logits)] = reproduce(run, meta, [image := scene(*size, seed=i)])
        assert_same_answer(mask, logits, expected := segment_mask(client, reader, image))
        seen |= set(np.unique(expected).tolist())
    images = [scene(97, 53, seed=10 + i) for i in range(3)]  # a batch of three
    for image, (mask, logits) in zip(images, reproduce(run, meta, images)):
        assert_same_answer(mask, logits, expected := segment_mask(client, reader, image))
        seen |= set(np.unique(expected).tolist())
    assert seen == set(V2)  # every class was compared somewhere


def test_the_triton_repository(client, reader, pets):
    r = get_export(client, reader, format="triton")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == f'attachment; filename="{MODEL}-v2-triton.zip"'
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(archive.namelist()) == [f"{MODEL}/1/model.onnx", f"{MODEL}/config.pbtxt"]
    model_bytes = archive.read(f"{MODEL}/1/model.onnx")
    assert model_bytes == get_export(client, reader, format="onnx").content  # the cached ONNX export itself
    config = archive.read(f"{MODEL}/config.pbtxt").decode("ascii")
    assert re.search(r'^name: "pets"$', config, re.M) and re.search(r'^platform: "onnxruntime_onnx"$', config, re.M)
    assert re.search(r"^max_batch_size: [1-9][0-9]*$", config, re.M) and re.search(r"^dynamic_batching \{", config, re.M)
    # Every input and output of the model, with its type and dimensions after the batch's.
    graph = onnx.load_from_string(model_bytes).graph
    declared = re.findall(r'name: "(\w+)"\n\s+data_type: (\w+)\n\s+dims: \[ ([-0-9, ]+) \]', config)
    types = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.UINT8: "TYPE_UINT8"}
    expected = [(v.name, types[v.type.tensor_type.elem_type],
                 ", ".join(str(d.dim_value) if d.HasField("dim_value") else "-1" for d in v.type.tensor_type.shape.dim[1:]))
                for v in [*graph.input, *graph.output]]
    assert declared == expected == [("image", "TYPE_FP32", "3, -1, -1"), ("logits", "TYPE_FP32", "4, -1, -1"),
                                    ("mask", "TYPE_UINT8", "-1, -1")]
    escaped = re.search(r'parameters \{ key: "strata" value \{ string_value: "(.*)" \} \}', config)[1]
    contract = json.loads(codecs.escape_decode(escaped)[0].decode("utf-8"))
    assert contract == json.loads(onnxruntime.InferenceSession(model_bytes).get_modelmeta()
                                  .custom_metadata_map["strata"])


def exports_of(client, model_id: int) -> tuple[list[str], list[tuple]]:
    state = client.app.state.strata
    objects = sorted(i.key for i in state.store.list(f"{model_prefix(model_id)}exports/"))
    with state.sessions() as s:
        rows = s.query(VersionExport).order_by(VersionExport.version, VersionExport.format).all()
        return objects, [(r.version, r.format, r.key, r.sha256, r.bytes, r.created_at) for r in rows]


def test_a_second_request_is_served_from_the_cache(client, reader, pets):
    first = get_export(client, reader, version="latest")
    objects, rows = exports_of(client, pets)
    assert len(objects) == 1 and [(r[0], r[1], r[2]) for r in rows] == [(2, "onnx", objects[0])]
    assert rows[0][3] == first.headers["x-content-sha256"] and rows[0][4] == len(first.content)
    # The checkpoint gone from the store and from the API's disk: only the cache can answer now.
    state = client.app.state.strata
    with state.sessions() as s:
        state.store.delete(s.get(ModelVersion, (pets, 2)).checkpoint_key)
    for path in (state.settings.cache_dir / "checkpoints").rglob("*.pt"):
        path.unlink()
    again = get_export(client, reader, version="2", format=None)  # onnx is the default
    assert again.status_code == 200 and again.content == first.content
    assert exports_of(client, pets) == (objects, rows)
    # A lost local copy is fetched from the store again.
    for path in (state.settings.cache_dir / "exports").rglob("*.onnx"):
        path.unlink()
    assert get_export(client, reader).content == first.content


def test_concurrent_first_requests_build_one_export(client, reader, pets):
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: get_export(client, reader, version="1"), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.content for a in answers}) == 1 and len({a.headers["x-content-sha256"] for a in answers}) == 1
    objects, rows = exports_of(client, pets)
    assert len(objects) == 1 and [(r[0], r[2]) for r in rows] == [(1, objects[0])]


def test_an_export_is_built_again_when_its_object_is_gone_or_its_contract_is_old(client, reader, pets):
    first = get_export(client, reader)
    state = client.app.state.strata
    [key], [row] = exports_of(client, pets)
    state.store.delete(key)  # and this process's copy: as another API process would find it
    for path in (state.settings.cache_dir / "exports").rglob("*.onnx"):
        path.unlink()
    assert get_export(client, reader).content == first.content  # the same network, the same file
    assert exports_of(client, pets)[0] == [key]
    with session_scope(state.sessions) as s:
        s.get(VersionExport, (pets, 2, "onnx")).contract = "strata-export/0"  # written by an older Strata
    assert get_export(client, reader).content == first.content
    [_], [again] = exports_of(client, pets)
    assert again[2:5] == row[2:5] and again[5] > row[5]
    with state.sessions() as s:
        assert s.get(VersionExport, (pets, 2, "onnx")).contract == CONTRACT


def test_deleting_a_version_deletes_its_exports(client, admin, reader, pets):
    assert get_export(client, reader, version="2", format="torchscript").status_code == 200
    assert get_export(client, reader, version="2", format="triton").status_code == 200  # and its ONNX
    objects, rows = exports_of(client, pets)
    assert len(objects) == 3 and sorted(r[1] for r in rows) == ["onnx", "torchscript", "triton"]
    r = client.delete(f"/models/{MODEL}/versions/2", headers=admin)
    assert r.status_code == 204, r.text
    assert exports_of(client, pets) == ([], [])
    assert get_export(client, reader, version="2").status_code == 404


def test_deleting_the_model_deletes_its_exports(client, admin, reader, pets):
    assert get_export(client, reader, version="1").status_code == 200
    assert client.delete(f"/models/{MODEL}", params={"confirm": MODEL}, headers=admin).status_code == 204
    assert exports_of(client, pets) == ([], [])


def test_bad_requests(client, reader, pets):
    r = get_export(client, reader, format="tflite")
    assert r.status_code == 422
    assert r.json()["detail"].startswith("query.format:") and all(f in r.json()["detail"]
                                                                for f in ("'onnx'", "'torchscript'", "'triton'"))
    r = get_export(client, reader, version="9")
    assert r.status_code == 404 and "model version 9 does not exist" in r.json()["detail"]
    r = get_export(client, reader, version="candidate")
    assert r.status_code == 404 and "neither a version number nor a set alias" in r.json()["detail"]
    assert get_export(client, reader, model="nope").status_code == 404
    assert get_export(client, {}).status_code == 401
    with session_scope(client.app.state.strata.sessions) as s:
        assert get_model(s, MODEL).id == pets
    assert exports_of(client, pets) == ([], [])  # nothing was exported


def test_the_openapi_document_describes_the_route(client):
    operation = client.get("/openapi.json").json()["paths"]["/models/{name}/versions/{version}/export"]["get"]
    ok = operation["responses"]["200"]
    assert set(ok["content"]) == {"application/octet-stream", "application/zip"}
    assert {"X-Content-SHA256", "ETag", "Content-Disposition"} <= set(ok["headers"])
    assert {"404", "422"} <= set(operation["responses"])
    [format] = [p for p in operation["parameters"] if p["name"] == "format"]
    assert format["in"] == "query"
