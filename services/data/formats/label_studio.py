"""Label Studio's JSON export (Export -> "JSON") of brush and polygon regions, zipped with its images.

    <any name>.json           # the export: a list of tasks, each {"id", "data": {"image": ...}, "annotations": [...]}
    <any folder>/<image>      # the tasks' images (Label Studio's export holds none: zip them with the JSON)

Images. A task's image is ``data.image`` (or, without that key, the one value of ``data`` naming an
image file): an upload path (``/data/upload/3/6f1d2a3b-street.jpg``), a URL, ``s3://...``, or a
local-files path (``/data/local-files/?d=images/street.jpg``). Its path is URL-decoded, then found in
the archive at that path, else as the one file anywhere with its base name, else (an uploaded file)
as the one file named like it without Label Studio's upload prefix (8 hex digits and ``-``:
``street.jpg``). An image is stored under its archive file's name.

Annotations. Cancelled (skipped) annotations are not read, nor predictions. Of a task's others the
``ground_truth`` one is read, else the most recently updated (``updated_at``, then ``created_at``,
then the highest ``id``). A task left without one is skipped (its image, if in the archive, is
reported among ``unused_files``); so is one whose annotation has only regions of other kinds
(rectangles, keypoints, ...: not a segmentation, and training it as background would teach wrong).
An annotation without any result is an image of background only.

Regions. ``brushlabels`` results (Label Studio's RLE, label_studio_rle.py) and ``polygonlabels``
results (points in percent of the image, those outside it moved to its edge, rasterised with
pycocotools) each paint one label, mapped BY NAME to the spec's classes; every other result type
(rectangles, choices, text, ...) is ignored. Every region's ``original_width`` x ``original_height`` must be its image's size. Where regions of
different labels overlap, the later result wins (Label Studio draws later regions over earlier
ones); such pixels are counted in the report (``overlaps_resolved``).
"""

from __future__ import annotations

import math
import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from pycocotools import mask as coco_mask

from services.data.formats.base import (
    IMAGE_SUFFIXES,
    ImportOptions,
    ImportReport,
    LabelMap,
    Tree,
    unique_stems,
)
from services.data.formats.label_studio_rle import RleError, as_bytes, decode_alpha
from services.data.upload import Sample, UploadRejected, listed, stem_of

SOURCE = "the Label Studio export"
MASK_TYPES = ("brushlabels", "polygonlabels")  # result types that paint pixels
# Result types that mark a region of the image without painting its pixels.
OTHER_REGION_TYPES = ("rectanglelabels", "ellipselabels", "keypointlabels", "rectangle", "ellipse", "keypoint",
                      "brush", "polygon", "labels")
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")  # Label Studio names an uploaded file <uuid4 hex[:8]>-<name>


def recognises(tree: Tree) -> bool:
    return any(_kind(tree, path) for path in tree.under("", (".json",)))


def read(tree: Tree, options: ImportOptions, report: ImportReport) -> list[Sample]:
    path = _export(tree)
    tasks = tree.json(path)
    labels = LabelMap(options, report, SOURCE)
    samples, defined, images = [], set(), {}
    for index, task in enumerate(tasks):
        found = _task(task, index, path)
        if found is None:
            continue
        where, reference, regions = found
        image = _image(tree, reference, where)
        if image in images:
            raise UploadRejected(f"{images[image]} and {where} both refer to the image {image!r}: "
                                 "send each image in one task")
        images[image] = where
        stem = stem_of(image)
        defined |= {r.label for r in regions}
        samples.append(Sample(stem, tree.file(image), _Regions(where, stem, tuple(regions), labels)))
    labels.require(defined)
    tree.note_unused(report, IMAGE_SUFFIXES)
    return unique_stems(samples, SOURCE)


# --- the export file ----------------------------------------------------------------------------
def _kind(tree: Tree, path: str) -> str | None:
    """"json" (the full export), "json_min" (the export that leaves out the RLE) or None."""
    try:
        doc = tree.json(path)
    except UploadRejected:  # not JSON: not an export
        return None
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
        return None
    first = doc[0]
    if "data" in first and ("annotations" in first or "completions" in first):
        return "json"
    if "annotation_id" in first and "annotator" in first:
        return "json_min"
    return None


def _export(tree: Tree) -> str:
    """The archive's one Label Studio JSON export."""
    kinds = {path: _kind(tree, path) for path in tree.under("", (".json",))}
    full = [path for path, kind in kinds.items() if kind == "json"]
    if len(full) > 1:
        raise UploadRejected(f"the archive holds {len(full)} Label Studio exports ({listed(full)}): send one")
    if full:
        return full[0]
    minimal = [path for path, kind in kinds.items() if kind == "json_min"]
    if minimal:
        raise UploadRejected(f"{minimal[0]!r} is Label Studio's JSON-MIN export, which leaves out the brush masks "
                             "(their RLE): export the project as \"JSON\" instead")
    raise UploadRejected(f"{SOURCE} is missing: the archive holds no JSON file listing tasks with \"data\" and "
                         "\"annotations\" (Label Studio's Export -> JSON)")


# --- tasks, annotations, regions --------------------------------------------------------------
@dataclass(frozen=True)
class _Region:
    where: str  # "export.json: task 3, annotation 7, result 'aB3x'"
    type: str  # one of MASK_TYPES
    label: str
    size: tuple[int, int]  # original_width, original_height
    value: dict[str, Any]


def _task(task: Any, index: int, path: str) -> tuple[str, str, list[_Region]] | None:
    """(how messages name the task: "export.json: task 3, annotation 7", its image reference, its
    annotation's regions), or None when it has no annotation to read (see the module's rules)."""
    if not isinstance(task, dict):
        raise UploadRejected(f"{path}: task #{index + 1} is not an object")
    where = f"{path}: task {task['id']}" if isinstance(task.get("id"), (int, str)) else f"{path}: task #{index + 1}"
    annotation = _chosen(task.get("annotations", task.get("completions")), where)
    if annotation is None:
        return None
    results = annotation.get("result") or []
    if not isinstance(results, list):
        raise UploadRejected(f"{where}: the annotation's \"result\" is not a list")
    where = f"{where}, annotation {annotation.get('id')}"
    regions = [_region(result, f"{where}, result {result.get('id')!r}") for result in results
               if isinstance(result, dict) and result.get("type") in MASK_TYPES]
    if not regions and any(isinstance(r, dict) and r.get("type") in OTHER_REGION_TYPES for r in results):
        return None
    return where, _reference(task.get("data"), where), regions


def _chosen(annotations: Any, where: str) -> dict[str, Any] | None:
    if annotations is None:
        return None
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise UploadRejected(f"{where}: \"annotations\" is not a list of objects")
    usable = [a for a in annotations if not a.get("was_cancelled") and not a.get("skipped")]
    if not usable:
        return None
    return max(usable, key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at") or a.get("created_at") or ""),
                                      a["id"] if isinstance(a.get("id"), int) else -1))


def _region(result: dict[str, Any], where: str) -> _Region:
    kind = result["type"]
    value = result.get("value")
    if not isinstance(value, dict):
        raise UploadRejected(f"{where}: the {kind} result has no \"value\" object")
    names = value.get(kind)
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        raise UploadRejected(f"{where}: a {kind} region must have exactly one label, not {names!r}")
    size = (result.get("original_width"), result.get("original_height"))
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
        raise UploadRejected(f"{where}: original_width and original_height must be positive integers, "
                             f"not {size[0]!r} and {size[1]!r}")
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            raise UploadRejected(f"{where}: a brush region needs \"format\": \"rle\" and its \"rle\" list")
    elif not _is_polygon(value.get("points")):
        raise UploadRejected(f"{where}: a polygon needs \"points\": at least 3 [x, y] pairs of numbers "
                             "(percent of the image)")
    return _Region(where, kind, names[0], size, value)  # type: ignore[arg-type]


def _is_polygon(points: Any) -> bool:
    return (isinstance(points, list) and len(points) >= 3
            and all(isinstance(p, list) and len(p) == 2 and all(_is_number(c) for c in p) for p in points))


def _is_number(c: Any) -> bool:
    return isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)


# --- images -------------------------------------------------------------------------------------
def _reference(data: Any, where: str) -> str:
    """The task's image reference: data.image, or the one data value naming an image file."""
    if not isinstance(data, dict):
        raise UploadRejected(f"{where}: the task has no \"data\" object")
    if isinstance(data.get("image"), str):
        return data["image"]
    named = [v for v in data.values() if isinstance(v, str) and _path(v).lower().endswith(IMAGE_SUFFIXES)]
    if len(named) != 1:
        raise UploadRejected(f"{where}: the task's \"data\" has no \"image\" (nor one value naming an image file)")
    return named[0]


def _path(reference: str) -> str:
    """The file path of an image reference: a URL's path or local-files' ``d``, URL-decoded."""
    parts = urlsplit(reference)
    local = parse_qs(parts.query).get("d")
    return local[0] if local and parts.path.rstrip("/").endswith("local-files") else unquote(parts.path)


def _image(tree: Tree, reference: str, where: str) -> str:
    """The archive path of a task's image (the module's rule)."""
    path = _path(reference)
    base = posixpath.basename(path)
    names = [path]
    if m := UPLOAD_PREFIX.match(base):
        names.append(m.group(1))
    for name in names:
        if found := tree.image_for(name):
            return found
    for name in names:
        if len(same := tree.named(posixpath.basename(name))) > 1:
            raise UploadRejected(f"{where}: several files could be its image {reference!r}: {listed(same)}")
    tried = " or ".join(repr(posixpath.basename(n)) for n in names)
    raise UploadRejected(f"{where}: its image {reference!r} is not in the archive (looked for a file named {tried}): "
                         "Label Studio's export holds no images; zip the export's JSON with them")


# --- masks ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Regions:
    """A task's regions, painted into one mask when asked: later results over earlier ones."""

    name: str
    stem: str
    regions: tuple[_Region, ...]
    labels: LabelMap

    def local_values(self, size: tuple[int, int], image_name: str) -> np.ndarray:
        width, height = size
        names = list(dict.fromkeys(r.label for r in self.regions))
        # Which of ``names`` a pixel shows; -1: none.
        owner = np.full((height, width), -1, np.int16 if len(names) < 2**15 else np.int32)
        overlaps = 0
        for region in self.regions:
            k = names.index(region.label)
            pixels = _pixels(region, size, image_name)
            below = owner[pixels]
            overlaps += int(np.count_nonzero((below >= 0) & (below != k)))
            owner[pixels] = k
        if overlaps:
            self.labels.report.note("overlaps_resolved", self.stem, pixels=overlaps)
        counts = np.bincount(owner.ravel() + 1, minlength=len(names) + 1)
        lut = np.zeros(len(names) + 1, np.uint8)  # 0: no region, background
        for k, name in enumerate(names, start=1):
            if counts[k]:
                lut[k] = self.labels.value(name, self.stem, int(counts[k]))
        return lut[owner + 1]


def _pixels(region: _Region, size: tuple[int, int], image_name: str) -> np.ndarray:
    """bool [H, W]: the pixels ``region`` paints."""
    where = region.where
    if region.size != size:
        raise UploadRejected(f"{where}: the region is drawn on a {region.size[0]}x{region.size[1]} image "
                             f"(original_width x original_height) but {image_name!r} is {size[0]}x{size[1]}")
    width, height = size
    if region.type == "brushlabels":
        try:
            return decode_alpha(as_bytes(region.value["rle"]), width, height)
        except RleError as err:
            raise UploadRejected(f"{where}: the brush RLE is not valid: {err}") from None
    # Points outside the image go to its edge: pycocotools walks every edge pixel by pixel (and
    # crashes on coordinates near 1e9), so a hostile point must not reach it.
    percent = np.clip(np.asarray(region.value["points"], np.float64), 0, 100)
    xy = (percent / 100 * (width, height)).ravel().tolist()
    rle = coco_mask.merge(coco_mask.frPyObjects([xy], height, width))
    return coco_mask.decode(rle).astype(bool)
