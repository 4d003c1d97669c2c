"""What COCO's two annotation formats share: finding their JSON files in an archive, reading their
``images`` and ``categories``, and finding each image's file.

Both formats are one JSON object ``{"images": [...], "annotations": [...], "categories": [...]}``:
panoptic annotations carry ``segments_info`` (one PNG per image), instance annotations
``segmentation`` (one geometry per object). Every field is checked as it is read, and a malformed
one is refused naming the file and the field (``annotations.json: images[3].width: ...``), never
with a KeyError.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from services.data.formats.base import Tree
from services.data.upload import UploadRejected, listed

KEYS = ("images", "annotations", "categories")
_MARKERS = tuple(f'"{key}"'.encode() for key in KEYS)
INSTANCES, PANOPTIC, BOXES = "instances", "panoptic", "boxes"
# Each archive's JSON files sorted once: both COCO importers ask when an archive's format is recognised.
_KINDS: WeakKeyDictionary[Tree, dict[str, str | None]] = WeakKeyDictionary()


# --- finding the JSON files -----------------------------------------------------------------------
def json_files(tree: Tree, kind: str) -> list[str]:
    """The archive's COCO JSON files of ``kind`` (INSTANCES, PANOPTIC or BOXES), by path."""
    kinds = _KINDS.get(tree)
    if kinds is None:
        kinds = _KINDS[tree] = {path: kind_of(tree, path) for path in tree.under("", (".json",))}
    return [path for path, found in kinds.items() if found == kind]


def kind_of(tree: Tree, path: str) -> str | None:
    """PANOPTIC (annotations carry segments_info), INSTANCES (they carry segmentation, or there are
    none), BOXES (neither: a detection export), or None: not a COCO annotation file."""
    # Only files naming all three keys are parsed: an archive may hold many other JSON files.
    data = tree.json(path, _MARKERS)
    if data is None or not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in KEYS):
        return None
    annotations = [a for a in data["annotations"] if isinstance(a, dict)]
    if any("segments_info" in a for a in annotations):
        return PANOPTIC
    if not data["annotations"] or any("segmentation" in a for a in annotations):
        return INSTANCES
    return BOXES


# --- checked fields -------------------------------------------------------------------------------
def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def entry(value: Any, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UploadRejected(f"{at}: expected an object, got {shown(value)}")
    return value


def required(obj: Mapping[str, Any], key: str, at: str) -> Any:
    if key not in obj:
        raise UploadRejected(f"{at}: has no {key!r}")
    return obj[key]


def identifier(obj: Mapping[str, Any], key: str, at: str) -> int | str:
    value = required(obj, key, at)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UploadRejected(f"{at}.{key}: expected an integer id, got {shown(value)}")
    return value


def count(obj: Mapping[str, Any], key: str, at: str, minimum: int = 1) -> int:
    value = required(obj, key, at)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UploadRejected(f"{at}.{key}: expected an integer of at least {minimum}, got {shown(value)}")
    return value


def text(obj: Mapping[str, Any], key: str, at: str) -> str:
    value = required(obj, key, at)
    if not isinstance(value, str) or not value.strip():
        raise UploadRejected(f"{at}.{key}: expected a non-empty string, got {shown(value)}")
    return value


def flag(obj: Mapping[str, Any], key: str, at: str) -> bool:
    """An optional 0/1 (or boolean) field such as iscrowd; absent is 0."""
    value = obj.get(key, 0)
    if value not in (0, 1) or isinstance(value, float):
        raise UploadRejected(f"{at}.{key}: expected 0 or 1, got {shown(value)}")
    return bool(value)


def items(obj: Mapping[str, Any], key: str, at: str) -> list[Any]:
    value = required(obj, key, at)
    if not isinstance(value, list):
        raise UploadRejected(f"{at}.{key}: expected a list, got {shown(value)}")
    return value


# --- categories and images ------------------------------------------------------------------------
def categories(data: Mapping[str, Any], path: str) -> dict[int | str, str]:
    """{category id: name}; two ids may share a name (they are the same class)."""
    names: dict[int | str, str] = {}
    for i, value in enumerate(data["categories"]):
        at = f"{path}: categories[{i}]"
        obj = entry(value, at)
        cid, name = identifier(obj, "id", at), text(obj, "name", at)
        if cid in names:
            raise UploadRejected(f"{at}.id: {cid!r} is also the id of category {names[cid]!r}")
        names[cid] = name.strip()
    return names


@dataclass(frozen=True)
class ImageEntry:
    """One entry of a JSON's ``images``; ``at`` names it in messages."""

    at: str
    id: int | str
    file_name: str
    width: int
    height: int

    def check_size(self, size: tuple[int, int], image_name: str) -> None:
        """Refuse an image file that is not the size its entry says (annotations drawn on another
        version of the image would land on the wrong pixels)."""
        if size != (self.width, self.height):
            raise UploadRejected(
                f"{self.at} says {self.file_name!r} is {self.width}x{self.height} (width x height), but the image "
                f"{image_name!r} is {size[0]}x{size[1]}: export the images the annotations were made on")


def images(data: Mapping[str, Any], path: str) -> dict[int | str, ImageEntry]:
    """{image id: entry}, every entry checked."""
    found: dict[int | str, ImageEntry] = {}
    names: dict[str, str] = {}
    for i, value in enumerate(data["images"]):
        at = f"{path}: images[{i}]"
        obj = entry(value, at)
        image = ImageEntry(at, identifier(obj, "id", at), text(obj, "file_name", at), count(obj, "width", at),
                           count(obj, "height", at))
        if image.id in found:
            raise UploadRejected(f"{at}.id: {image.id!r} is also the id of {found[image.id].at}")
        if image.file_name in names:
            raise UploadRejected(f"{at}.file_name: {image.file_name!r} is also the file of {names[image.file_name]}")
        found[image.id], names[image.file_name] = image, at
    return found


def image_folders(json_path: str) -> tuple[str, ...]:
    """Where a JSON's file names may be relative to, besides its own folder: images/ beside it or
    beside its folder (CVAT's "COCO 1.0": annotations/instances_<subset>.json + images/[<subset>/]),
    or a folder named for the subset beside its folder (COCO's own: annotations/ + val2017/)."""
    base = posixpath.dirname(json_path)
    parent = posixpath.dirname(base)
    stem = posixpath.splitext(posixpath.basename(json_path))[0]
    subset = stem.split("_", 1)[-1]
    return tuple(dict.fromkeys([posixpath.join(base, "images"), posixpath.join(parent, "images"),
                                posixpath.join(parent, "images", subset), posixpath.join(parent, subset), parent]))


def refuse_missing(source: str, what: str, missing: Sequence[str], hint: str) -> None:
    if missing:
        raise UploadRejected(f"{source} lists {len(missing)} {what} the archive does not hold: {listed(missing, 5)}; "
                             f"{hint}")


class Claims:
    """Which JSON entry each archive file was taken for: one image annotated by two entries (two
    subsets' JSON files, say) is refused rather than read twice."""

    def __init__(self) -> None:
        self._by: dict[str, str] = {}

    def claim(self, path: str, at: str) -> None:
        if path in self._by:
            raise UploadRejected(f"{path!r} is annotated twice, by {self._by[path]} and by {at}: send each image "
                                 "once")
        self._by[path] = at
