"""Bad input to POST /models/{name}/tasks: a clear 4xx naming the file and values, and nothing
half-stored."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect

from api.limits import UploadLimitMiddleware
from api.main import create_app
from services.db.session import make_engine, make_session_factory, session_scope
from services.registry.models import create_model
from tests.api.test_tasks import MODEL, as_zip, bearer, dataset, encode, index_mask, leftovers, photo, post_task

NOTHING = {"tasks": 0, "dataset_items": 0, "classes": 0, "objects": 0, "messages": 0}
TASKS = f"/models/{MODEL}/tasks"


@pytest.fixture
def admin(prepared):
    """An admin key, and the (empty) model the tests upload to."""
    with session_scope(make_session_factory(make_engine(prepared))) as s:
        create_model(s, MODEL)
    return bearer(prepared, "admin")


def replaced(data, field, index, name=None, blob=None):
    items = list(data[field])
    old_name, old_blob = items[index]
    items[index] = (name or old_name, old_blob if blob is None else blob)
    return {**data, field: items}


def zip_with_modes(entries: dict[str, bytes], modes: dict[str, int]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in entries.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = modes.get(name, 0o644 | stat.S_IFREG) << 16
            zf.writestr(info, blob)
    return buf.getvalue()


def palette_masks(odd_colour) -> dict:
    """Three palette-mask pairs for the class cat (red); the second mask also holds ``odd_colour``."""
    data = dataset(3, 1, "PNG")
    masks = []
    for i, (name, _) in enumerate(data["masks"]):
        colours = np.zeros((12, 16, 3), np.uint8)
        colours[2] = (200, 0, 0)
        if i == 1:
            colours[5] = odd_colour
        masks.append((name, encode(colours)))
    return {**data, "masks": masks}


BAD_MASK_VALUES = index_mask(0, 1)
BAD_MASK_VALUES[3, :2] = [3, 9]
PALETTE = {"mask_format": "palette", "palette": {"cat": [200, 0, 0]}}

# name: (spec, files, archive bytes, status, words the message must hold)
CASES = {
    "not an image": ({"classes": ["cat"]}, replaced(dataset(3, 1), "images", 1, blob=b"GIF? no, text"), None,
                     422, ["image 'img01.jpg' is not an image"]),
    "truncated image": ({"classes": ["cat"]}, replaced(dataset(3, 1, "PNG"), "images", 2,
                                                        blob=encode(photo(9, 64, 64))[:200]), None,
                        422, ["img02.png", "cannot be decoded"]),
    "mask size differs": ({"classes": ["cat"]}, replaced(dataset(3, 1), "masks", 1,
                                                         blob=encode(np.zeros((6, 8), np.uint8))), None,
                          422, ["mask 'img01.png' is 8x6 but its image 'img01.jpg' is 16x12"]),
    "mask values outside the classes": ({"classes": ["cat"]}, replaced(dataset(3, 1), "masks", 0,
                                                                      blob=encode(BAD_MASK_VALUES)), None,
                                        422, ["mask 'img00.png' has values 3, 9 outside the declared classes"]),
    "mask not a PNG": ({"classes": ["cat"]}, replaced(dataset(3, 1), "masks", 2,
                                                      blob=encode(index_mask(2, 1), "JPEG")), None,
                       422, ["mask 'img02.png' is JPEG; masks must be PNG"]),
    "colour not in the palette": ({"classes": ["cat"], **PALETTE}, palette_masks((1, 2, 3)), None,
                                  422, ["mask 'img01.png' has colours not in the palette: [1, 2, 3]"]),
    "image without a mask": ({"classes": ["cat"]}, {**dataset(3, 1), "masks": dataset(3, 1)["masks"][:2]}, None,
                             422, ["images without a mask: img02.jpg"]),
    "mask without an image": ({"classes": ["cat"]}, {**dataset(2, 1), "masks": [
        *dataset(2, 1)["masks"], ("extra.png", encode(index_mask(0, 1)))]}, None,
                              422, ["masks without an image: extra.png"]),
    "two images with one stem": ({"classes": ["cat"]}, {**dataset(2, 1), "images": [
        *dataset(2, 1)["images"], ("img00.png", encode(photo(0)))]}, None,
                                 422, ["two images share the name 'img00'"]),
    "repeated class": ({"classes": ["cat", "dog", "cat"]}, dataset(2, 3), None, 422, ["classes repeats cat"]),
    "no classes": ({"classes": []}, dataset(2, 1), None, 422, ["classes: List should have at least 1 item"]),
    "background as a class": ({"classes": ["background"]}, dataset(2, 1), None, 422, ["'background' is reserved"]),
    "unknown hyperparameter": ({"classes": ["cat"], "hyperparameters": {"lr": 0.1, "lamda_d": 2}}, dataset(2, 1),
                               None, 422, ["hyperparameters.lamda_d: unknown key"]),
    "weight the method does not use": ({"classes": ["cat"], "method": "ft", "hyperparameters": {"lambda_d": 2}},
                                       dataset(2, 1), None, 422, ["method 'ft' does not use lambda_d"]),
    "unknown also_labelled": ({"classes": ["cat"], "also_labelled": ["dog"]}, dataset(2, 2), None,
                              422, ["also_labelled names classes that model 'm' does not have: dog"]),
    "the architecture under its old name": ({"classes": ["cat"], "model": "fcn_resnet50"}, dataset(2, 1), None,
                                            422, ["`model` is now `architecture`"]),
    "unknown architecture": ({"classes": ["cat"], "architecture": "resnet9000"}, dataset(2, 1), None,
                             422, ["architecture: unknown architecture 'resnet9000'"]),
    "spec not JSON": ("{'classes': ['cat']}", dataset(2, 1), None, 422, ["not valid JSON"]),
    "a plain form without files": ({"classes": ["cat"]}, None, None, 422,
                                   ["expected a multipart/form-data body, got content type "
                                    "'application/x-www-form-urlencoded'"]),
    "files and an archive": ({"classes": ["cat"]}, dataset(2, 1), as_zip(dataset(2, 1)), 422,
                             ["either files `images` + `masks` or one `archive`, not both"]),
    "zip with an absolute path": ({"classes": ["cat"]}, None, as_zip(dataset(2, 1), {"/etc/cron.d/x": b"x"}),
                                  422, ["archive entry '/etc/cron.d/x' has an absolute path"]),
    "zip with ..": ({"classes": ["cat"]}, None, as_zip(dataset(2, 1), {"images/../../evil.png": b"x"}),
                    422, ["archive entry 'images/../../evil.png' contains '..'"]),
    "zip with a symlink": ({"classes": ["cat"]}, None, zip_with_modes(
        {"images/a.png": b"/etc/passwd", "masks/a.png": b"x"}, {"images/a.png": stat.S_IFLNK | 0o777}),
                           422, ["archive entry 'images/a.png' is a symbolic link"]),
    "zip with a stray file": ({"classes": ["cat"]}, None, as_zip(dataset(2, 1), {"notes.txt": b"hi"}),
                              422, ["archive entry 'notes.txt' is outside images/ and masks/"]),
    "zip bomb": ({"classes": ["cat"]}, None, as_zip(dataset(2, 1), {"images/zeros.png": bytes(5_000_000)}),
                 413, ["decompresses to more than", "STRATA_MAX_ARCHIVE_RATIO"]),
    "not a zip": ({"classes": ["cat"]}, None, b"PK\x03\x04 truncated", 422, ["not a readable zip file"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_named_and_leaves_nothing_behind(client, prepared, admin, case):
    spec, files, archive, status, words = CASES[case]
    r = post_task(client, admin, spec, files, archive)
    assert r.status_code == status, r.text
    for word in words:
        assert word in r.json()["detail"]
    assert leftovers(prepared) == NOTHING
    assert list((prepared.data_dir / "uploads").iterdir()) == []  # the work directory is gone too


def test_an_existing_class_is_a_conflict_and_leaves_nothing_behind(client, prepared, admin):
    assert post_task(client, admin, {"classes": ["cat", "dog"]}, dataset(2, 2)).status_code == 202
    before = leftovers(prepared)
    r = post_task(client, admin, {"classes": ["bird", "dog"]}, dataset(2, 2))
    assert r.status_code == 409 and "model 'm' already has classes dog" in r.json()["detail"]
    r = post_task(client, admin, {"classes": ["bird"], "architecture": "fcn_resnet50"}, dataset(2, 1))
    assert r.status_code == 422, r.text
    assert "architecture: only a model's first task chooses it" in r.json()["detail"]
    assert "model 'm' is a 'lraspp_mobilenet_v3_large'" in r.json()["detail"]
    r = post_task(client, admin, {"classes": ["bird"], "model": "deeplabv3_resnet101"}, dataset(2, 1))
    assert r.status_code == 422 and "`model` is now `architecture`" in r.json()["detail"]
    assert leftovers(prepared) == before


def test_a_body_that_is_not_multipart(client, prepared, admin):
    r = client.post(TASKS, json={"classes": ["cat"]}, headers=admin)
    assert r.status_code == 422 and "expected a multipart/form-data body" in r.json()["detail"]
    r = client.post(TASKS, files=[("photos", ("a.png", b"x"))], data={"spec": "{}"}, headers=admin)
    assert r.status_code == 422 and "unknown form field 'photos'" in r.json()["detail"]
    ctype, body = multipart_body({"classes": ["cat"]}, {})
    r = client.post(TASKS, content=body, headers={**admin, "content-type": ctype})
    assert r.status_code == 422 and "no images were uploaded" in r.json()["detail"]
    r = client.post(TASKS, content=body[:-20], headers={**admin, "content-type": ctype})
    assert r.status_code == 422 and "ended before its closing boundary" in r.json()["detail"]
    assert leftovers(prepared) == NOTHING


# --- the size limit -------------------------------------------------------------------------------
LIMIT = 4096


@pytest.fixture
def small_client(prepared):
    with TestClient(create_app(prepared.model_copy(update={"max_upload_bytes": LIMIT}))) as c:
        yield c


def multipart_body(spec: dict, data, boundary: str = "strata-test-boundary") -> tuple[str, bytes]:
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{json.dumps(spec)}\r\n'.encode()
    for field, items in data.items():
        for name, blob in items:
            body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n").encode() + blob + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def test_a_declared_length_over_the_limit_is_413(small_client, prepared, admin):
    ctype, body = multipart_body({"classes": ["cat"]}, dataset(10, 1))
    assert len(body) > LIMIT
    r = small_client.post(TASKS, content=body, headers={**admin, "content-type": ctype})
    assert r.status_code == 413
    assert r.json()["detail"] == (f"the request body is {len(body)} bytes, over the upload limit of {LIMIT} "
                                  "bytes (STRATA_MAX_UPLOAD_BYTES)")
    assert leftovers(prepared) == NOTHING


def test_a_chunked_body_over_the_limit_is_413(small_client, prepared, admin):
    ctype, body = multipart_body({"classes": ["cat"]}, dataset(10, 1))

    def chunks():  # no Content-Length: the size is only known by counting
        for i in range(0, len(body), 512):
            yield body[i:i + 512]

    r = small_client.post(TASKS, content=chunks(), headers={**admin, "content-type": ctype})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (f"the request body passed {LIMIT} bytes, over the upload limit of {LIMIT} "
                                  "bytes (STRATA_MAX_UPLOAD_BYTES)")  # counted, not declared
    assert leftovers(prepared) == NOTHING
    assert list((prepared.data_dir / "uploads").iterdir()) == []
    # A body under the limit still goes through the same client.
    ctype, body = multipart_body({"classes": ["cat"]}, dataset(1, 1))
    r = small_client.post(TASKS, content=iter([body]), headers={**admin, "content-type": ctype})
    assert r.status_code == 202, r.text


def run_asgi(app, receive_chunks: int, chunk: bytes, headers=()) -> tuple[int, list[dict]]:
    """Drive ``app`` with a body of ``receive_chunks`` chunks; (chunks pulled, messages sent)."""
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < receive_chunks}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}
    asyncio.run(app(scope, receive, send))
    return pulled, sent


async def reads_everything(scope, receive, send):
    """An upload endpoint: reads the body to its end, then answers 200 with its size."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def test_the_middleware_stops_reading_as_soon_as_the_body_is_over():
    app = UploadLimitMiddleware(reads_everything, max_bytes=1000)
    pulled, sent = run_asgi(app, 100, b"x" * 100)
    assert pulled == 11  # 1100 bytes: the 11th chunk crossed the limit; the other 89 were never read
    assert sent[0]["status"] == 413 and len(sent) == 2
    assert b"passed 1000 bytes" in sent[1]["body"]


def test_the_middleware_rejects_a_declared_length_without_reading_and_passes_small_bodies():
    app = UploadLimitMiddleware(reads_everything, max_bytes=1000)
    pulled, sent = run_asgi(app, 3, b"x" * 100, headers=[(b"content-length", b"5000")])
    assert pulled == 0 and sent[0]["status"] == 413
    pulled, sent = run_asgi(app, 10, b"x" * 100)
    assert pulled == 10 and sent[0]["status"] == 200 and sent[1]["body"] == b"1000"
