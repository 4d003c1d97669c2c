"""COCO panoptic: one JSON ``{"images", "annotations", "categories"}`` whose annotations each name
an image's PNG (``file_name``) and its segments (``segments_info``), the PNGs and the images.

    annotations/panoptic_<subset>.json     # any name
    annotations/panoptic_<subset>/<png>    # the PNGs: a folder named like the JSON beside it, or
                                           # beside its folder (Detectron2's layout), or panoptic/,
                                           # or anywhere under their base name
    <subset>/<image>                       # the images, found as COCO instances finds them
                                           # (images/, beside the JSON, ...)

Each PNG pixel's segment id is R + 256 G + 256^2 B; the segment's category, found through
``segments_info``, maps to a class BY NAME. Id 0 is void (unlabelled or ambiguous): ignore (255),
never trained on. A crowd segment (``iscrowd: 1``) is labelled with its category like any other.
A segment id the PNG holds but ``segments_info`` does not list means the PNG and the JSON disagree:
the upload is refused. Every panoptic JSON of the archive is read; an image the JSON lists without
an annotation is skipped (reported as unused).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.data.formats import coco_json as cj
from services.data.formats.base import (
    IMAGE_SUFFIXES,
    ImportOptions,
    ImportReport,
    LabelMap,
    Tree,
    unique_stems,
)
from services.data.upload import ReceivedFile, Sample, UploadRejected, as_rgb, listed, open_mask, stem_of
from services.labels import IGNORE_INDEX

SOURCE = "the COCO panoptic export"
VOID = 0
MAX_SEGMENT_ID = 256**3 - 1


def recognises(tree: Tree) -> bool:
    return bool(cj.json_files(tree, cj.PANOPTIC))


def read(tree: Tree, options: ImportOptions, report: ImportReport) -> list[Sample]:
    paths = cj.json_files(tree, cj.PANOPTIC)
    if not paths:
        raise UploadRejected(f"{SOURCE} has no panoptic JSON: format 'coco_panoptic' reads a JSON file holding "
                             "\"images\", \"annotations\" (each with \"file_name\" and \"segments_info\") and "
                             "\"categories\", with its PNGs and images")
    exports = [_Export.parse(tree, path) for path in paths]
    labels = LabelMap(options, report, f"{SOURCE} ({listed(paths, 3)})")
    labels.require({name for export in exports for name in export.categories.values()})
    samples, missing_pngs, missing_images, claims = [], [], [], cj.Claims()
    for export in exports:
        for annotation in export.annotations:
            image = export.images[annotation.image_id]
            png = tree.image_for(annotation.file_name, export.png_folder, export.png_folders)
            path = tree.image_for(image.file_name, export.folder, cj.image_folders(export.path))
            if png is None:
                missing_pngs.append(annotation.file_name)
            if path is None:
                missing_images.append(image.file_name)
            if png is None or path is None:
                continue
            if png == path:
                raise UploadRejected(f"{annotation.at}: its PNG and its image are the same file, {png!r}: keep the "
                                     "PNGs in a folder named like the JSON file")
            claims.claim(path, image.at)
            stem = stem_of(path)
            mask = _Segments(image, annotation, tree.file(png), labels, stem)
            samples.append(Sample(stem, tree.file(path), mask))
    cj.refuse_missing(SOURCE, "panoptic PNGs", missing_pngs, "put them in a folder named like the JSON file, beside it")
    cj.refuse_missing(SOURCE, "images", missing_images, "export with the images, or put them beside the JSON file "
                      "or in images/")
    tree.note_unused(report, IMAGE_SUFFIXES)
    return unique_stems(samples, SOURCE)


# --- the JSON ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Annotation:
    at: str  # 'panoptic.json: annotations[3]'
    image_id: int | str
    file_name: str  # the PNG
    segments: dict[int, str]  # segment id -> its category's name


@dataclass(frozen=True)
class _Export:
    path: str
    folder: str
    categories: dict[int | str, str]
    images: dict[int | str, cj.ImageEntry]
    annotations: list[_Annotation]

    @classmethod
    def parse(cls, tree: Tree, path: str) -> _Export:
        data = tree.json(path)
        categories, images = cj.categories(data, path), cj.images(data, path)
        annotations: list[_Annotation] = []
        annotated: dict[int | str, str] = {}
        for i, value in enumerate(data["annotations"]):
            at = f"{path}: annotations[{i}]"
            obj = cj.entry(value, at)
            image_id = cj.identifier(obj, "image_id", at)
            if image_id not in images:
                raise UploadRejected(f"{at}.image_id: {image_id!r} is not the id of any entry of images")
            if image_id in annotated:
                raise UploadRejected(f"{at}.image_id: {image_id!r} is annotated by {annotated[image_id]} already; a "
                                     "panoptic export has one annotation per image")
            annotated[image_id] = at
            segments = _segments(cj.items(obj, "segments_info", at), f"{at}.segments_info", categories)
            annotations.append(_Annotation(at, image_id, cj.text(obj, "file_name", at), segments))
        return cls(path, posixpath.dirname(path), categories, images, annotations)

    @property
    def png_folder(self) -> str:
        """panoptic_val2017.json -> panoptic_val2017/ beside it."""
        return posixpath.splitext(self.path)[0]

    @property
    def png_folders(self) -> tuple[str, ...]:
        parent = posixpath.dirname(self.folder)
        name = posixpath.basename(self.png_folder)
        return (posixpath.join(parent, name), posixpath.join(self.folder, "panoptic"),
                posixpath.join(parent, "panoptic"))


def _segments(values: list[Any], at: str, categories: dict[int | str, str]) -> dict[int, str]:
    segments: dict[int, str] = {}
    for j, value in enumerate(values):
        where = f"{at}[{j}]"
        obj = cj.entry(value, where)
        segment_id = cj.count(obj, "id", where)
        if segment_id > MAX_SEGMENT_ID:
            raise UploadRejected(f"{where}.id: {segment_id} is more than R + 256 G + 256^2 B can hold")
        if segment_id in segments:
            raise UploadRejected(f"{where}.id: segment {segment_id} is listed twice")
        category_id = cj.identifier(obj, "category_id", where)
        if category_id not in categories:
            raise UploadRejected(f"{where}.category_id: {category_id!r} is not the id of any entry of categories")
        cj.flag(obj, "iscrowd", where)  # checked, not used: a crowd segment is its category's pixels
        segments[segment_id] = categories[category_id]
    return segments


# --- one image's mask ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Segments:
    image: cj.ImageEntry
    annotation: _Annotation
    png: ReceivedFile
    labels: LabelMap
    stem: str

    @property
    def name(self) -> str:
        return f"panoptic PNG {self.png.name!r}"

    def local_values(self, size: tuple[int, int], image_name: str) -> np.ndarray:
        self.image.check_size(size, image_name)
        with open_mask(self.png, size, image_name) as im:
            rgb = as_rgb(self.png.name, im).astype(np.int32)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        present, inverse = np.unique(ids, return_inverse=True)
        counts = np.bincount(inverse.ravel(), minlength=len(present))
        segments = self.annotation.segments
        unlisted = [i for i in present.tolist() if i != VOID and i not in segments]
        if unlisted:
            raise UploadRejected(f"{self.name} holds segment ids {listed(unlisted, 5)}, which "
                                 f"{self.annotation.at}.segments_info does not list: the PNG and the JSON disagree")
        pixels: dict[str, int] = {}
        for i, n in zip(present.tolist(), counts.tolist(), strict=True):
            if i != VOID:
                pixels[segments[i]] = pixels.get(segments[i], 0) + n
        values = {name: self.labels.value(name, self.stem, n) for name, n in pixels.items()}
        lut = np.array([IGNORE_INDEX if i == VOID else values[segments[i]] for i in present.tolist()], np.uint8)
        return lut[inverse.reshape(ids.shape)]
