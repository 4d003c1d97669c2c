"""COCO instances: one JSON ``{"images", "annotations", "categories"}`` whose annotations each carry
a ``segmentation``, and the images it lists.

    annotations/instances_<subset>.json    # CVAT's "COCO 1.0"; or annotations.json, Roboflow's
                                           # <split>/_annotations.coco.json, ... (any name)
    images/<file_name>                     # or beside the JSON, images/<subset>/, <subset>/ beside
                                           # its folder, or anywhere under its base name

Every COCO instances JSON of the archive is read (train and val exports together); each image may
be annotated by one of them only. A segmentation is polygons (``[[x1, y1, x2, y2, ...], ...]``), an
uncompressed RLE (``{"counts": [ints], "size": [h, w]}``, column-major) or a compressed one
(``counts`` a string); pycocotools rasterises them. Categories map to classes BY NAME.

The overlap rule: crowd regions (``iscrowd: 1``) are painted first, then the other instances from
the largest area to the smallest, so a smaller instance -- usually the one in front -- keeps the
pixels it shares with a larger one (ties: the later annotation wins). Pixels claimed by instances
of different classes are noted in the report (``overlaps_resolved``). Pixels no annotation covers
are background.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from services.data.formats import coco_json as cj
from services.data.formats.base import (
    IMAGE_SUFFIXES,
    ImportOptions,
    ImportReport,
    LabelMap,
    Tree,
    unique_stems,
)
from services.data.upload import Sample, UploadRejected, listed, stem_of

SOURCE = "the COCO export"
# A compressed RLE's counts: characters '0'..'o', six bits each; bit 5 says "more of this number follows".
_RLE_TEXT = re.compile(r"[0-o]*")
_MORE = 0x20


def recognises(tree: Tree) -> bool:
    return bool(cj.json_files(tree, cj.INSTANCES))


def read(tree: Tree, options: ImportOptions, report: ImportReport) -> list[Sample]:
    paths = cj.json_files(tree, cj.INSTANCES)
    if not paths:
        _refuse_absent(tree)
    exports = [_Export.parse(tree, path) for path in paths]
    labels = LabelMap(options, report, f"{SOURCE} ({listed(paths, 3)})")
    labels.require({name for export in exports for name in export.categories.values()})
    samples, missing, claims = [], [], cj.Claims()
    for export in exports:
        for image in export.images.values():
            path = tree.image_for(image.file_name, export.folder, cj.image_folders(export.path))
            if path is None:
                missing.append(image.file_name)
                continue
            claims.claim(path, image.at)
            stem = stem_of(path)
            samples.append(Sample(stem, tree.file(path),
                                  _Instances(image, tuple(export.by_image.get(image.id, ())), labels, stem)))
    cj.refuse_missing(SOURCE, "images", missing, "export with the images (CVAT: tick \"Save images\"), or put them "
                      "beside the JSON file or in images/")
    tree.note_unused(report, IMAGE_SUFFIXES)
    return unique_stems(samples, SOURCE)


def _refuse_absent(tree: Tree) -> None:
    boxes = cj.json_files(tree, cj.BOXES)
    if boxes:
        raise UploadRejected(f"{listed(boxes, 3)} holds boxes only (no annotation has a segmentation): Strata trains "
                             "on masks; export the polygons or masks (COCO instance segmentation)")
    raise UploadRejected(f"{SOURCE} has no annotations JSON: format 'coco' reads a JSON file holding \"images\", "
                         "\"annotations\" (each with a \"segmentation\") and \"categories\", with its images")


# --- the JSON ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Annotation:
    at: str  # 'annotations.json: annotations[3] (id 7)'
    name: str  # its category's name
    crowd: bool
    segmentation: list[list[float]] | dict[str, Any]


@dataclass(frozen=True)
class _Export:
    path: str
    folder: str
    categories: dict[int | str, str]
    images: dict[int | str, cj.ImageEntry]
    by_image: dict[int | str, list[_Annotation]]

    @classmethod
    def parse(cls, tree: Tree, path: str) -> _Export:
        data = tree.json(path)
        categories, images = cj.categories(data, path), cj.images(data, path)
        by_image: dict[int | str, list[_Annotation]] = {}
        for i, value in enumerate(data["annotations"]):
            at = f"{path}: annotations[{i}]"
            obj = cj.entry(value, at)
            if "id" in obj:
                at += f" (id {cj.shown(obj['id'])})"
            image_id, category_id = cj.identifier(obj, "image_id", at), cj.identifier(obj, "category_id", at)
            if image_id not in images:
                raise UploadRejected(f"{at}.image_id: {image_id!r} is not the id of any entry of images")
            if category_id not in categories:
                raise UploadRejected(f"{at}.category_id: {category_id!r} is not the id of any entry of categories")
            segmentation = _segmentation(cj.required(obj, "segmentation", at), f"{at}.segmentation",
                                         images[image_id])
            annotation = _Annotation(at, categories[category_id], cj.flag(obj, "iscrowd", at), segmentation)
            by_image.setdefault(image_id, []).append(annotation)
        return cls(path, path.rpartition("/")[0], categories, images, by_image)


def _segmentation(value: Any, at: str, image: cj.ImageEntry) -> list[list[float]] | dict[str, Any]:
    if isinstance(value, dict):
        return _rle(value, at, image)
    if not isinstance(value, list):
        raise UploadRejected(f"{at}: expected polygons [[x1, y1, x2, y2, ...], ...] or an RLE {{\"counts\", "
                             f"\"size\"}}, got {cj.shown(value)}")
    if not value:
        raise UploadRejected(f"{at}: is empty: the annotation has a box only; Strata trains on masks (export "
                             "polygons or masks, or delete the box)")
    return [_polygon(polygon, f"{at}[{j}]", image) for j, polygon in enumerate(value)]


def _polygon(value: Any, at: str, image: cj.ImageEntry) -> list[float]:
    if not isinstance(value, list) or not all(type(v) in (int, float) for v in value):
        raise UploadRejected(f"{at}: expected a polygon [x1, y1, x2, y2, ...] of numbers, got {cj.shown(value)}")
    if len(value) % 2:
        raise UploadRejected(f"{at}: has {len(value)} numbers; a polygon is x, y pairs")
    for x, y in zip(value[0::2], value[1::2], strict=True):
        # Far-away points would make the rasteriser walk (and allocate for) enormous edges.
        if not (math.isfinite(x) and math.isfinite(y) and -image.width <= x <= 2 * image.width
                and -image.height <= y <= 2 * image.height):
            raise UploadRejected(f"{at}: point ({x}, {y}) lies far outside the {image.width}x{image.height} image")
    return value


def _rle(value: dict[str, Any], at: str, image: cj.ImageEntry) -> dict[str, Any]:
    size, counts = cj.required(value, "size", at), cj.required(value, "counts", at)
    if size != [image.height, image.width]:
        raise UploadRejected(f"{at}.size: {cj.shown(size)} is not the image's [height, width], "
                             f"[{image.height}, {image.width}]")
    if isinstance(counts, str):
        # Checked before pycocotools reads it: its C decoder trusts the text to be well formed.
        if not _RLE_TEXT.fullmatch(counts) or (counts and (ord(counts[-1]) - 48) & _MORE):
            raise UploadRejected(f"{at}.counts: not a compressed RLE (characters '0'..'o', as pycocotools writes)")
        return {"size": size, "counts": counts}
    if not isinstance(counts, list) or not all(type(c) is int and c >= 0 for c in counts):
        raise UploadRejected(f"{at}.counts: expected a compressed RLE string or a list of run lengths (integers "
                             f">= 0), got {cj.shown(counts)}")
    if sum(counts) != image.height * image.width:
        raise UploadRejected(f"{at}.counts: the runs add up to {sum(counts)} pixels, but the image has "
                             f"{image.height} x {image.width} = {image.height * image.width}")
    return {"size": size, "counts": counts}


# --- one image's mask ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Instances:
    """An image's instance annotations, rasterised into one semantic mask when asked."""

    image: cj.ImageEntry
    annotations: tuple[_Annotation, ...]
    labels: LabelMap
    stem: str

    @property
    def name(self) -> str:
        return f"{self.image.at} ({self.image.file_name!r})"

    def local_values(self, size: tuple[int, int], image_name: str) -> np.ndarray:
        self.image.check_size(size, image_name)
        width, height = size
        shapes = [(a, rle) for a in self.annotations if (rle := _to_rle(a, height, width)) is not None]
        # The overlap rule (module docstring): crowds first, then the largest instance to the smallest.
        shapes.sort(key=lambda shape: (not shape[0].crowd, -int(coco_mask.area(shape[1]))))
        names = list(dict.fromkeys(a.name for a, _ in shapes))
        # Each name's value, without noting anything yet: the report gets each label's final pixels below.
        probe = LabelMap(self.labels.options, ImportReport("coco"), SOURCE)
        lut = np.array([0, *(probe.value(name, self.stem) for name in names)], np.uint8)
        owner = np.zeros((height, width), np.min_scalar_type(len(names)))  # which name painted each pixel
        values = np.zeros((height, width), np.uint8)
        contested = np.zeros((height, width), bool)
        for annotation, rle in shapes:
            k = names.index(annotation.name) + 1
            pixels = _decode(annotation, rle)
            contested |= pixels & (owner != 0) & (values != lut[k])
            owner[pixels], values[pixels] = k, lut[k]
        painted = np.bincount(owner.ravel(), minlength=len(names) + 1)
        for k, name in enumerate(names, start=1):
            self.labels.value(name, self.stem, int(painted[k]))
        if overlaps := int(contested.sum()):
            self.labels.report.note("overlaps_resolved", self.stem, pixels=overlaps)
        return values


def _to_rle(annotation: _Annotation, height: int, width: int) -> dict[str, Any] | None:
    """The annotation as one pycocotools RLE; None for polygons too small to cover a pixel."""
    segmentation = annotation.segmentation
    if isinstance(segmentation, dict):
        # frPyObjects turns integer counts into the compressed form; a string is that form already.
        if isinstance(segmentation["counts"], list):
            return coco_mask.frPyObjects(segmentation, height, width)
        return segmentation
    # Fewer than 3 points enclose nothing (and pycocotools would read 4 numbers as a box).
    polygons = [p for p in segmentation if len(p) >= 6]
    if not polygons:
        return None
    return coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))


def _decode(annotation: _Annotation, rle: dict[str, Any]) -> np.ndarray:
    try:
        return coco_mask.decode(rle).astype(bool)
    except ValueError:
        raise UploadRejected(f"{annotation.at}.segmentation.counts: not a valid RLE: its runs overrun the image's "
                             f"{rle['size'][0]} x {rle['size'][1]} pixels") from None
