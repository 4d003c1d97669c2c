"""Validating an uploaded dataset before anything is stored: pairing images with masks, decoding
images, and turning masks (index or palette) into the task's LOCAL index form.

Local index form, what the object store holds for every mask: 8-bit single-channel PNG, 0 =
background, k = the k-th of the task's new ``classes``, n + j = the j-th ``also_labelled`` class,
255 = ignore. The worker maps local values to global class indices.

Every rejection is an :class:`UploadRejected` whose message names the file and what is wrong
(``UploadTooLarge`` for size limits).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from services.data.images import check_pixels, decoding
from services.errors import InvalidInput, TooLarge
from services.labels import BACKGROUND_INDEX, IGNORE_INDEX

# Formats we store as uploaded; the stored key takes the format's usual extension.
IMAGE_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".bmp": "image/bmp", ".tif": "image/tiff",
                 ".webp": "image/webp"}
MAX_STEM_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LISTED = 10  # names or values quoted in one message


class UploadRejected(InvalidInput):
    """The upload is unusable as sent (HTTP 422); the message says which file and why."""


class UploadTooLarge(UploadRejected, TooLarge):
    """A size limit was exceeded (HTTP 413)."""


@dataclass(frozen=True)
class ReceivedFile:
    """An uploaded file on local disk: its name as sent (or its archive path), size and sha256."""

    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Pair:
    stem: str
    image: ReceivedFile
    mask: ReceivedFile


class MaskSource(Protocol):
    """An image's mask, produced when asked (one image in memory at a time). ``name``: how messages
    name it (the mask file, or the annotation file and image)."""

    name: str

    def local_values(self, size: tuple[int, int], image_name: str) -> np.ndarray:
        """uint8 [H, W] local index values for an image of ``size`` (width, height)."""
        ...


@dataclass(frozen=True)
class Sample:
    """An image to store and where its mask comes from."""

    stem: str
    image: ReceivedFile
    mask: MaskSource


@dataclass(frozen=True)
class PreparedItem:
    """A validated pair, ready to store: the original image and the mask in local index form."""

    stem: str
    image: ReceivedFile
    image_ext: str
    width: int
    height: int
    mask_path: Path
    labels: frozenset[int] = frozenset()  # the local class values its mask shows (not 0, not 255)


def listed(names: Sequence[object], limit: int = _LISTED) -> str:
    """'a, b, c' or 'a, b, ... and 7 more'."""
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- pairing ----------------------------------------------------------------------------------
def stem_of(filename: str) -> str:
    """The file's stem: its base name (clients may send a path) without the last extension."""
    base = re.split(r"[/\\]", filename)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base[1:] else base
    problem = None
    if not stem:
        problem = "it has no name before its extension"
    elif stem.startswith("."):
        problem = "hidden files are not accepted"
    elif len(stem) > MAX_STEM_CHARS:
        problem = f"its name is longer than {MAX_STEM_CHARS} characters"
    elif _CONTROL.search(stem):
        problem = "its name contains control characters"
    if problem:
        raise UploadRejected(f"file {filename!r}: {problem}")
    return stem


def _by_stem(files: Sequence[ReceivedFile], what: str) -> dict[str, ReceivedFile]:
    found: dict[str, ReceivedFile] = {}
    for f in files:
        stem = stem_of(f.name)
        if stem in found:
            raise UploadRejected(f"two {what} share the name {stem!r}: {found[stem].name!r} and {f.name!r}")
        found[stem] = f
    return found


def pair_files(images: Sequence[ReceivedFile], masks: Sequence[ReceivedFile]) -> list[Pair]:
    """Pair images with masks by file stem, sorted by stem; every file must find its partner."""
    by_image, by_mask = _by_stem(images, "images"), _by_stem(masks, "masks")
    if not by_image and not by_mask:
        raise UploadRejected("no images were uploaded: send files `images` + `masks` or one `archive`")
    lonely_images = sorted(by_image[s].name for s in by_image.keys() - by_mask.keys())
    lonely_masks = sorted(by_mask[s].name for s in by_mask.keys() - by_image.keys())
    problems = []
    if lonely_images:
        problems.append(f"images without a mask: {listed(lonely_images)}")
    if lonely_masks:
        problems.append(f"masks without an image: {listed(lonely_masks)}")
    if problems:
        raise UploadRejected("images and masks are paired by file name; " + "; ".join(problems))
    return [Pair(stem, by_image[stem], by_mask[stem]) for stem in sorted(by_image)]


# --- images -------------------------------------------------------------------------------------
def inspect_image(f: ReceivedFile, max_pixels: int) -> tuple[str, int, int]:
    """(extension, width, height) of a fully decodable image of at most ``max_pixels`` pixels."""
    what = f"image {f.name!r}"
    with decoding(what, not_image=UploadRejected, too_large=UploadRejected):
        with Image.open(f.path) as im:
            fmt, (width, height) = im.format, im.size
            if fmt not in IMAGE_EXTENSIONS:
                raise UploadRejected(f"{what} is {fmt}; accepted formats: {', '.join(IMAGE_EXTENSIONS)}")
            check_pixels(what, width, height, max_pixels, UploadRejected)
            im.verify()
        with Image.open(f.path) as im:  # verify() leaves the image unusable: decode a fresh one
            im.load()
    return IMAGE_EXTENSIONS[fmt], width, height


# --- masks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskFormat:
    """How this task's masks encode its classes.

    local_names: the local classes in order (value k = local_names[k - 1]).
    palette: for palette masks, {local name: (r, g, b)}; None for index masks.
    """

    local_names: tuple[str, ...]
    palette: Mapping[str, tuple[int, int, int]] | None = None

    def to_local(self, f: ReceivedFile, size: tuple[int, int], image_name: str) -> np.ndarray:
        """The mask as local index values, uint8 [H, W]; checks format, size and values."""
        with open_mask(f, size, image_name) as im:
            if self.palette is None:
                return self._index_values(f.name, im)
            return self._palette_values(f.name, im)

    def samples(self, pairs: Sequence[Pair]) -> list[Sample]:
        return [Sample(p.stem, p.image, _MaskFile(self, p.mask)) for p in pairs]

    def _index_values(self, name: str, im: Image.Image) -> np.ndarray:
        if im.mode not in ("L", "P"):
            raise UploadRejected(
                f"mask {name!r} is a {im.mode} image; index masks must be single-channel 8-bit PNGs "
                "(mode L or P) holding class values")
        values = np.asarray(im, dtype=np.uint8)  # for mode P: the palette indices, not colours
        n = len(self.local_names)
        present = np.unique(values)
        bad = [int(v) for v in present if n < v < IGNORE_INDEX]
        if bad:
            raise UploadRejected(
                f"mask {name!r} has values {listed(bad)} outside the declared classes: allowed are 0 "
                f"(background), 1..{n} ({listed(self.local_names)}) and 255 (ignore)")
        return values

    def _palette_values(self, name: str, im: Image.Image) -> np.ndarray:
        assert self.palette is not None
        codes = rgb_codes(as_rgb(name, im))
        colours, inverse = np.unique(codes, return_inverse=True)
        by_code = {(r << 16) | (g << 8) | b: k for k, cls in enumerate(self.local_names, start=1)
                   for r, g, b in [self.palette[cls]]}
        by_code[0] = BACKGROUND_INDEX
        unknown = [c for c in colours.tolist() if c not in by_code]
        if unknown:
            shown = ", ".join(f"[{c >> 16}, {(c >> 8) & 255}, {c & 255}]" for c in unknown[:5])
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise UploadRejected(
                f"mask {name!r} has colours not in the palette: {shown}{more}; allowed are black "
                "[0, 0, 0] (background) and the palette's colours")
        lut = np.array([by_code[c] for c in colours.tolist()], dtype=np.uint8)
        return lut[inverse.reshape(codes.shape)]


@dataclass(frozen=True)
class _MaskFile:
    """A mask file of an ``images/`` + ``masks/`` upload, read as its task's ``MaskFormat`` says."""

    fmt: MaskFormat
    file: ReceivedFile

    @property
    def name(self) -> str:
        return self.file.name

    def local_values(self, size: tuple[int, int], image_name: str) -> np.ndarray:
        return self.fmt.to_local(self.file, size, image_name)


def open_mask(f: ReceivedFile, size: tuple[int, int], image_name: str) -> Image.Image:
    what = f"mask {f.name!r}"
    with decoding(what, not_image=UploadRejected, too_large=UploadRejected):
        im = Image.open(f.path)
        if im.format != "PNG":
            im.close()
            raise UploadRejected(f"{what} is {im.format}; masks must be PNG (lossless)")
        if im.size != size:
            im.close()
            raise UploadRejected(
                f"{what} is {im.size[0]}x{im.size[1]} but its image {image_name!r} is {size[0]}x{size[1]}")
        im.load()
    return im


def rgb_codes(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] colours -> int32 [H, W] codes (r << 16 | g << 8 | b), one number per colour."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]


def as_rgb(name: str, im: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] colours of an RGB, palette (P) or fully opaque RGBA mask."""
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode == "P":
        return np.asarray(im.convert("RGB"))
    if im.mode == "RGBA":
        rgba = np.asarray(im)
        if (rgba[..., 3] != 255).any():
            raise UploadRejected(f"mask {name!r} has transparent pixels; palette masks must be opaque RGB")
        return rgba[..., :3]
    raise UploadRejected(f"mask {name!r} is a {im.mode} image; palette masks must be RGB PNGs")


# --- the whole dataset ----------------------------------------------------------------------------
def prepare_item(sample: Sample, max_pixels: int, out_dir: Path) -> PreparedItem:
    """Validate one sample and write its mask in local index form to ``out_dir``."""
    ext, width, height = inspect_image(sample.image, max_pixels)
    values = sample.mask.local_values((width, height), sample.image.name)
    if values.shape != (height, width):  # an importer's own check failed to catch it
        raise UploadRejected(f"{sample.mask.name}: the mask is {values.shape[1]}x{values.shape[0]} but its image "
                             f"{sample.image.name!r} is {width}x{height}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Named by a digest of the stem: stems may hold characters this filesystem dislikes.
    mask_path = out_dir / f"mask-{hashlib.sha1(sample.stem.encode()).hexdigest()}.png"
    Image.fromarray(values).save(mask_path, format="PNG")  # uint8 [H, W] -> mode L
    labels = frozenset(int(v) for v in np.unique(values) if v not in (BACKGROUND_INDEX, IGNORE_INDEX))
    return PreparedItem(sample.stem, sample.image, ext, width, height, mask_path, labels)


def unlabelled_classes(items: Sequence[PreparedItem], local_names: Sequence[str], names: Sequence[str]) -> list[str]:
    """Those of ``names`` (among ``local_names``, in mask-value order) that no mask of ``items`` shows."""
    shown = frozenset().union(*(item.labels for item in items))
    return [name for k, name in enumerate(local_names, start=1) if name in names and k not in shown]


def prepare_items(samples: Sequence[Sample], max_pixels: int, out_dir: Path) -> list[PreparedItem]:
    """Validate every sample (one image in memory at a time); the first bad file rejects the upload."""
    return [prepare_item(s, max_pixels, out_dir) for s in samples]
