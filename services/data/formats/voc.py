"""Pascal VOC segmentation, as the devkit lays it out (possibly under ``VOCdevkit/VOC2012/``):

    ImageSets/Segmentation/<list>.txt   # stems, one a line (train.txt, val.txt, ...); optional
    SegmentationClass/<stem>.png        # palette PNGs: each pixel's INDEX is its class id, 255 = void
                                        # (RGB PNGs are read through VOC's colour map: CVAT writes
                                        # those for VOC's own labels, without a labelmap.txt)
    SegmentationObject/<stem>.png       # instance masks (not read)
    JPEGImages/<stem>.jpg               # the images

The images read are those of every list (their union) or, without lists, every SegmentationClass
PNG. Ids are named by the spec's ``label_ids`` or the standard 21 VOC classes (``VOC_LABELS``); a
table without an id 0 keeps 0 as background. Id 255 is void (ignore) unless ``label_ids`` names it.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict

from services.data.formats.base import (
    IMAGE_SUFFIXES,
    ImportOptions,
    ImportReport,
    LabelMap,
    Tree,
    unique_stems,
)
from services.data.formats.label_ids import IdMask, LabelIds
from services.data.upload import Sample, UploadRejected, listed, stem_of
from services.labels import BACKGROUND_INDEX, BACKGROUND_NAME, voc_colour

SOURCE = "the Pascal VOC export"
MASKS, IMAGES, LISTS, OBJECTS = "SegmentationClass", "JPEGImages", "ImageSets/Segmentation", "SegmentationObject"
# The devkit's classes in id order (VOCdevkit's VOCinit.m).
VOC_LABELS = {name: i for i, name in enumerate((
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"))}
# The devkit's colour map, which VOC's palettes (and CVAT's VOC-label masks) use: {rgb code: id}.
VOC_COLOUR_IDS = {(r << 16) | (g << 8) | b: i for i in range(256) for r, g, b in [voc_colour(i)]}
EXPECTED = ("Pascal VOC masks are palette (mode P) or grey (mode L) PNGs whose pixel value is the class id, or RGB "
            "PNGs in the VOC colour map. A CVAT "
            "\"Segmentation mask 1.1\" export has colour masks: send it with its labelmap.txt (format 'cvat_mask')")


def recognises(tree: Tree) -> bool:
    return bool(_mask_paths(tree))


def read(tree: Tree, options: ImportOptions, report: ImportReport) -> list[Sample]:
    root = _root(tree)
    table = dict(VOC_LABELS if options.label_ids is None else options.label_ids)
    if BACKGROUND_INDEX not in table.values():
        table.setdefault(BACKGROUND_NAME, BACKGROUND_INDEX)  # VOC's 0 is background unless given to a label
    ids = LabelIds(table, LabelMap(options, report, SOURCE))
    stems = segmentation_stems(tree, root)
    masks = {stem: posixpath.join(root, MASKS, f"{stem}.png") for stem in stems}
    unmasked = [stem for stem, path in masks.items() if path not in tree.files]
    if unmasked:
        raise UploadRejected(f"{SOURCE} lists images without a mask in {posixpath.join(root, MASKS) + '/'!r}: "
                             f"{listed(unmasked)}")
    images = images_by_stem(tree, root, stems)
    samples = [Sample(stem_of(path), tree.file(images[stem]),
                      IdMask(path, tree.file(path), ids, stem, EXPECTED, VOC_COLOUR_IDS))
               for stem, path in masks.items()]
    objects = posixpath.join(root, OBJECTS) + "/"  # instance masks: part of the layout, not forgotten
    tree.note_unused(report, IMAGE_SUFFIXES, layout=lambda path: path.startswith(objects))
    return unique_stems(samples, SOURCE)


def _mask_paths(tree: Tree) -> list[str]:
    """Every ``.../SegmentationClass/<name>.png``."""
    return [p for p in tree.under("", (".png",)) if posixpath.basename(posixpath.dirname(p)) == MASKS]


def _root(tree: Tree) -> str:
    """The folder holding SegmentationClass/ ('' at the top, or e.g. 'VOCdevkit/VOC2012')."""
    roots = sorted({posixpath.dirname(posixpath.dirname(p)) for p in _mask_paths(tree)})
    if not roots:
        raise UploadRejected(f"{SOURCE} has no {MASKS}/*.png masks (format 'voc' is Pascal VOC's layout: "
                             f"{MASKS}/, {IMAGES}/ and optionally {LISTS}/)")
    if len(roots) > 1:
        shown = [posixpath.join(r, MASKS) for r in roots]
        raise UploadRejected(f"the archive holds {len(roots)} {MASKS} folders ({listed(shown)}): send one export")
    return roots[0]


def segmentation_stems(tree: Tree, root: str) -> list[str]:
    """The images a VOC layout lists (every ImageSets/Segmentation list) or, without lists, every mask."""
    lists = tree.under(posixpath.join(root, LISTS), (".txt",))
    stems = [line.split()[0] for path in lists for line in tree.text(path).splitlines() if line.strip()]
    if not lists:
        folder = posixpath.join(root, MASKS)
        stems = [posixpath.basename(p)[:-4] for p in tree.under(folder, (".png",)) if posixpath.dirname(p) == folder]
    return list(dict.fromkeys(stems))


def images_by_stem(tree: Tree, root: str, stems: list[str], source: str = SOURCE) -> dict[str, str]:
    """{stem: archive path} of the images of ``stems`` in JPEGImages/ (any image extension); every
    stem must have exactly one. ``source`` names the export in messages (CVAT's has this layout too)."""
    folder = posixpath.join(root, IMAGES)
    found: dict[str, list[str]] = defaultdict(list)
    for path in tree.under(folder, IMAGE_SUFFIXES):
        if posixpath.dirname(path) == folder:
            found[posixpath.splitext(posixpath.basename(path))[0]].append(path)
    missing = [stem for stem in stems if not found.get(stem)]
    if missing:
        raise UploadRejected(f"{source} has no image in {folder + '/'!r} for {listed(missing)}: export with the "
                             f"images (CVAT: \"Save images\"), or add {IMAGES}/<name>.jpg for each mask")
    several = [listed(found[stem]) for stem in stems if len(found[stem]) > 1]
    if several:
        raise UploadRejected(f"{source} has several images of one name: {'; '.join(several[:5])}")
    return {stem: found[stem][0] for stem in stems}
