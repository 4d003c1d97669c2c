"""Upload validation: the streaming multipart reader, zip safety, pairing, images and masks."""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.data.archive import ArchiveLimits, unpack
from services.data.multipart import MultipartSpool
from services.data.upload import (
    MaskFormat,
    Pair,
    ReceivedFile,
    UploadRejected,
    UploadTooLarge,
    inspect_image,
    pair_files,
    prepare_item,
    stem_of,
)


# --- helpers ----------------------------------------------------------------------------------
def encode(array: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def put(tmp_path: Path, name: str, data: bytes) -> ReceivedFile:
    path = tmp_path / f"f-{hashlib.sha1(name.encode()).hexdigest()}"
    path.write_bytes(data)
    return ReceivedFile(name=name, path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ123") -> tuple[str, bytes]:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def spool(tmp_path: Path, content_type: str) -> MultipartSpool:
    return MultipartSpool(content_type, tmp_path, text_fields={"spec": 1000}, file_fields={"images", "masks"})


def feed_in_chunks(sp: MultipartSpool, body: bytes, size: int = 7) -> None:
    for i in range(0, len(body), size):
        sp.feed(body[i:i + size])


# --- multipart ----------------------------------------------------------------------------------
def test_multipart_files_go_to_disk_with_their_sha256(tmp_path):
    image = encode(rgb())
    ctype, body = multipart([("spec", None, b'{"classes": ["a"]}'), ("images", "x.png", image),
                             ("masks", "x.png", b"mask bytes")])
    sp = spool(tmp_path, ctype)
    feed_in_chunks(sp, body)
    got = sp.finish()
    assert got.texts == {"spec": '{"classes": ["a"]}'}
    [img] = got.files_of("images")
    assert img.name == "x.png" and img.path.read_bytes() == image
    assert img.size == len(image) and img.sha256 == hashlib.sha256(image).hexdigest()
    assert got.files_of("masks")[0].path.read_bytes() == b"mask bytes"


def test_multipart_digest_ignores_boundary_and_part_order_but_not_content(tmp_path):
    parts = [("spec", None, b"{}"), ("images", "a.png", b"A"), ("images", "b.png", b"B")]

    def digest(parts, boundary):
        ctype, body = multipart(parts, boundary)
        sp = spool(tmp_path / boundary, ctype)
        (tmp_path / boundary).mkdir()
        sp.feed(body)
        return sp.finish().sha256

    assert digest(parts, "one") == digest(list(reversed(parts)), "two")
    assert digest(parts, "three") != digest([*parts[:2], ("images", "b.png", b"C")], "four")


@pytest.mark.parametrize("parts, message", [
    ([("extra", None, b"1")], "unknown form field 'extra'"),
    ([("images", None, b"1")], "form field 'images' must be a file upload"),
    ([("spec", None, b"x" * 1001)], "over its limit of 1000 bytes"),
    ([("spec", None, b"\xff\xfe")], "not UTF-8"),
    ([("spec", None, b"{}"), ("spec", None, b"{}")], "more than once"),
])
def test_multipart_rejects_unexpected_fields(tmp_path, parts, message):
    ctype, body = multipart(parts)
    sp = spool(tmp_path, ctype)
    with pytest.raises(UploadRejected, match=message):
        sp.feed(body)
        sp.finish()


def test_multipart_rejects_a_truncated_body_and_a_wrong_content_type(tmp_path):
    ctype, body = multipart([("images", "a.png", b"A" * 100)])
    sp = spool(tmp_path, ctype)
    sp.feed(body[:60])
    with pytest.raises(UploadRejected, match="ended before its closing boundary"):
        sp.finish()
    with pytest.raises(UploadRejected, match="expected a multipart/form-data body"):
        spool(tmp_path, "application/json")
    with pytest.raises(UploadRejected, match="no boundary"):
        spool(tmp_path, "multipart/form-data")


def test_multipart_caps_the_number_of_files(tmp_path):
    ctype, body = multipart([("images", f"{i}.png", b"x") for i in range(3)])
    sp = MultipartSpool(ctype, tmp_path, text_fields={}, file_fields={"images"}, max_files=2)
    with pytest.raises(UploadRejected, match="too many files: at most 2"):
        sp.feed(body)


def prepare(p: Pair, fmt: MaskFormat, out_dir: Path):
    return prepare_item(fmt.samples([p])[0], 10**6, out_dir)


# --- archives -----------------------------------------------------------------------------------
def zip_file(tmp_path: Path, entries: dict[str, bytes], *, name: str = "data.zip",
             modes: dict[str, int] | None = None, compression: int = zipfile.ZIP_DEFLATED) -> ReceivedFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for entry, data in entries.items():
            info = zipfile.ZipInfo(entry)
            info.compress_type = compression
            if modes and entry in modes:
                info.external_attr = modes[entry] << 16
            zf.writestr(info, data)
    return put(tmp_path, name, buf.getvalue())


LIMITS = ArchiveLimits(max_bytes=10_000_000, max_ratio=200)


def test_archive_unpacks_images_and_masks_named_by_their_entry(tmp_path):
    arch = zip_file(tmp_path, {"images/": b"", "images/a.jpg": b"IMG", "masks/a.png": b"MASK"})
    found = unpack(arch, tmp_path / "out", LIMITS)
    assert [f.name for f in found["images"]] == ["images/a.jpg"]
    assert found["images"][0].path.read_bytes() == b"IMG"
    assert found["masks"][0].sha256 == hashlib.sha256(b"MASK").hexdigest()


@pytest.mark.parametrize("entry, message", [
    ("/etc/passwd", "absolute path"),
    ("C:/images/a.png", "absolute path"),
    ("images/../../a.png", "contains '..'"),
    ("..\\images\\a.png", "contains '..'"),
    ("readme.txt", "outside images/ and masks/"),
    ("__MACOSX/images/._a.png", "outside images/ and masks/"),
    ("images/sub/a.png", "nested inside images/ and masks/"),
    ("other/", "outside images/ and masks/"),
])
def test_archive_rejects_unsafe_or_stray_entries(tmp_path, entry, message):
    arch = zip_file(tmp_path, {"images/a.png": b"x", entry: b"y"})
    with pytest.raises(UploadRejected, match=message):
        unpack(arch, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()  # checked before anything was extracted


def test_archive_rejects_symlinks(tmp_path):
    arch = zip_file(tmp_path, {"images/a.png": b"/etc/passwd"}, modes={"images/a.png": stat.S_IFLNK | 0o777})
    with pytest.raises(UploadRejected, match="symbolic link"):
        unpack(arch, tmp_path / "out", LIMITS)


def test_archive_over_the_ratio_is_too_large(tmp_path):
    # 2 MB of zeros deflate to about 2 KB: a ratio near 1000, over the limit of 200.
    arch = zip_file(tmp_path, {"images/a.png": bytes(2_000_000)})
    with pytest.raises(UploadTooLarge, match="decompresses to more than"):
        unpack(arch, tmp_path / "out", LIMITS)
    with pytest.raises(UploadTooLarge):
        unpack(arch, tmp_path / "out", ArchiveLimits(max_bytes=1_000_000, max_ratio=10_000))
    assert len(unpack(arch, tmp_path / "ok", ArchiveLimits(max_bytes=10**7, max_ratio=10_000))["images"]) == 1


def test_archive_whose_headers_lie_is_rejected_without_extracting_more_than_declared(tmp_path):
    arch = zip_file(tmp_path, {"images/a.png": bytes(2_000_000)}, compression=zipfile.ZIP_STORED)
    data = bytearray(arch.path.read_bytes())
    # Declare 10 bytes in the central directory (what the checks read) but keep the data.
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    arch.path.write_bytes(bytes(data))
    limits = ArchiveLimits(max_bytes=1_000_000, max_ratio=200)
    with pytest.raises(UploadRejected, match="archive entry 'images/a.png' cannot be extracted"):
        unpack(arch, tmp_path / "out", limits)
    extracted = list((tmp_path / "out").glob("*"))
    assert all(p.stat().st_size <= 1_000_000 for p in extracted)


def test_not_a_zip(tmp_path):
    with pytest.raises(UploadRejected, match="not a readable zip file"):
        unpack(put(tmp_path, "data.zip", b"PK not really"), tmp_path / "out", LIMITS)


# --- pairing --------------------------------------------------------------------------------------
def test_pairing_by_stem_names_every_lonely_file(tmp_path):
    images = [put(tmp_path, n, b"i") for n in ("a.jpg", "b.jpg", "c.png")]
    masks = [put(tmp_path, n, b"m") for n in ("a.png", "c.png", "d.png")]
    with pytest.raises(UploadRejected) as err:
        pair_files(images, masks)
    assert "images without a mask: b.jpg" in str(err.value)
    assert "masks without an image: d.png" in str(err.value)
    pairs = pair_files(images[:1] + images[2:], masks[:2])
    assert [(p.stem, p.image.name, p.mask.name) for p in pairs] == [("a", "a.jpg", "a.png"), ("c", "c.png", "c.png")]


def test_pairing_rejects_duplicate_stems_and_nothing_at_all(tmp_path):
    with pytest.raises(UploadRejected, match="two images share the name 'a'"):
        pair_files([put(tmp_path, "a.jpg", b"1"), put(tmp_path, "a.png", b"2")], [])
    with pytest.raises(UploadRejected, match="no images were uploaded"):
        pair_files([], [])


def test_stems():
    assert stem_of("dir/sub\\0001.frame.png") == "0001.frame"
    assert stem_of("noext") == "noext"
    for bad in (".DS_Store", "x" * 201 + ".png", "a\x01.png", ".png"):
        with pytest.raises(UploadRejected):
            stem_of(bad)


# --- images -----------------------------------------------------------------------------------------
def test_images_are_decoded_and_measured(tmp_path):
    assert inspect_image(put(tmp_path, "a.jpeg", encode(rgb(), "JPEG")), 10**6) == (".jpg", 16, 12)
    assert inspect_image(put(tmp_path, "b.png", encode(rgb())), 10**6) == (".png", 16, 12)


def test_bad_images_are_named(tmp_path):
    with pytest.raises(UploadRejected, match="image 'a.png' is not an image"):
        inspect_image(put(tmp_path, "a.png", b"hello, not a picture"), 10**6)
    truncated = encode(rgb(64, 64))[:300]
    with pytest.raises(UploadRejected, match="image 'b.png' cannot be decoded"):
        inspect_image(put(tmp_path, "b.png", truncated), 10**6)
    with pytest.raises(UploadRejected, match=r"image 'c.png' is 16x12 = 192 pixels, over the limit of 100"):
        inspect_image(put(tmp_path, "c.png", encode(rgb())), 100)
    with pytest.raises(UploadRejected, match="image 'd.gif' is GIF"):
        inspect_image(put(tmp_path, "d.gif", encode(rgb()[..., 0], "GIF")), 10**6)


# --- masks ------------------------------------------------------------------------------------------
def pair(tmp_path: Path, mask: bytes, image: np.ndarray | None = None, stem: str = "x") -> Pair:
    image = rgb() if image is None else image
    return Pair(stem, put(tmp_path, f"{stem}.jpg", encode(image, "JPEG")), put(tmp_path, f"{stem}.png", mask))


def stored(item) -> np.ndarray:
    with Image.open(item.mask_path) as im:
        assert im.mode == "L" and im.format == "PNG"
        return np.asarray(im)


def test_index_masks_keep_their_values(tmp_path):
    values = np.zeros((12, 16), np.uint8)
    values[2:5] = 1
    values[6:8] = 3
    values[0] = 255
    fmt = MaskFormat(("cat", "dog", "car"))
    item = prepare(pair(tmp_path, encode(values)), fmt, tmp_path / "m")
    assert (item.width, item.height, item.image_ext) == (16, 12, ".jpg")
    assert np.array_equal(stored(item), values)


def test_palette_mode_index_masks_are_read_as_indices(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8), mode="P")
    im.putpalette([0, 0, 0, 250, 0, 0, 0, 250, 0] + [7] * (253 * 3))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    item = prepare(pair(tmp_path, buf.getvalue(), rgb(2, 2)), MaskFormat(("a", "b")), tmp_path / "m")
    assert stored(item).tolist() == [[0, 1], [2, 255]]


def test_index_mask_values_outside_the_classes_are_named(tmp_path):
    values = np.zeros((12, 16), np.uint8)
    values[0, :3] = [3, 7, 254]
    with pytest.raises(UploadRejected) as err:
        prepare(pair(tmp_path, encode(values)), MaskFormat(("cat", "dog")), tmp_path / "m")
    assert "mask 'x.png' has values 3, 7, 254 outside the declared classes" in str(err.value)
    assert "1..2 (cat, dog)" in str(err.value)


def test_mask_size_mode_and_format_are_checked(tmp_path):
    fmt = MaskFormat(("cat",))
    with pytest.raises(UploadRejected, match="mask 'x.png' is 8x6 but its image 'x.jpg' is 16x12"):
        prepare(pair(tmp_path, encode(np.zeros((6, 8), np.uint8))), fmt, tmp_path / "m")
    with pytest.raises(UploadRejected, match="mask 'x.png' is a RGB image; index masks must be single-channel"):
        prepare(pair(tmp_path, encode(rgb())), fmt, tmp_path / "m")
    with pytest.raises(UploadRejected, match="mask 'x.png' is JPEG; masks must be PNG"):
        prepare(pair(tmp_path, encode(np.zeros((12, 16), np.uint8), "JPEG")), fmt, tmp_path / "m")
    with pytest.raises(UploadRejected, match="mask 'x.png' is not an image"):
        prepare(pair(tmp_path, b"nope"), fmt, tmp_path / "m")


PALETTE = {"cat": (255, 0, 0), "dog": (0, 255, 0), "car": (0, 0, 255)}


def test_palette_masks_become_local_indices(tmp_path):
    colours = np.zeros((12, 16, 3), np.uint8)
    colours[1:3] = PALETTE["dog"]
    colours[5] = PALETTE["car"]  # an also_labelled class: value n + 1 = 3
    colours[7:9] = PALETTE["cat"]
    fmt = MaskFormat(("cat", "dog", "car"), PALETTE)
    values = stored(prepare(pair(tmp_path, encode(colours)), fmt, tmp_path / "m"))
    expected = np.zeros((12, 16), np.uint8)
    expected[1:3], expected[5], expected[7:9] = 2, 3, 1
    assert np.array_equal(values, expected)


def test_palette_masks_name_up_to_five_unknown_colours(tmp_path):
    colours = np.zeros((12, 16, 3), np.uint8)
    for i in range(7):
        colours[i, 0] = (10 + i, 20, 30)
    fmt = MaskFormat(("cat",), {"cat": (255, 0, 0)})
    with pytest.raises(UploadRejected) as err:
        prepare(pair(tmp_path, encode(colours)), fmt, tmp_path / "m")
    msg = str(err.value)
    assert "mask 'x.png' has colours not in the palette: [10, 20, 30], [11, 20, 30]" in msg
    assert "[14, 20, 30] (and 2 more)" in msg and "[15, 20, 30]" not in msg


def test_palette_masks_must_be_colour_images(tmp_path):
    fmt = MaskFormat(("cat",), {"cat": (255, 0, 0)})
    with pytest.raises(UploadRejected, match="palette masks must be RGB"):
        prepare(pair(tmp_path, encode(np.zeros((12, 16), np.uint8))), fmt, tmp_path / "m")
