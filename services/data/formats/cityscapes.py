"""Cityscapes-style label-id PNGs, as the Cityscapes download lays them out:

    leftImg8bit/<split>/<city>/<name>_leftImg8bit.png          # the images
    gtFine/<split>/<city>/<name>_gtFine_labelIds.png           # grey PNGs: each pixel's value is a label id
    gtCoarse/<split>/<city>/<name>_gtCoarse_labelIds.png       # coarse labels (read where no gtFine one is)
    gtFine/.../<name>_gtFine_color.png, _instanceIds.png, _labelTrainIds.png, _polygons.json   # not read

An image and its mask are paired by ``<name>``, which becomes the sample's name. Ids are named by
the spec's ``label_ids`` or Cityscapes' own labelIds table (``CITYSCAPES_LABELS``). The four labels
that are not scene content -- unlabeled, ego vehicle, rectification border, out of roi -- are void
(ignore) unless the spec names them; every other label the spec does not name follows
``other_labels`` (Cityscapes has no background label: "background" maps the rest to 0).
"""

from __future__ import annotations

import re
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

SOURCE = "the Cityscapes export"
# labelIds of cityscapesScripts' labels.py; 'license plate' (id -1) never appears in a labelIds PNG.
CITYSCAPES_LABELS = {name: i for i, name in enumerate((
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "caravan", "trailer", "train", "motorcycle", "bicycle"))}
# Pixels outside the scene (the recording car, the rectified image's border): never a class to learn.
VOID_LABELS = ("unlabeled", "ego vehicle", "rectification border", "out of roi")
IMAGE = re.compile(r"(?:^|/)([^/]+)_leftImg8bit\.png$")
MASK = re.compile(r"(?:^|/)([^/]+)_(gtFine|gtCoarse)_labelIds\.png$")
# What the layout holds beside the images and labelIds masks, for viewing or for other tasks.
COMPANION = re.compile(r"_(gtFine|gtCoarse)_(color|instanceIds|labelTrainIds)\.png$")
EXPECTED = ("Cityscapes masks are grey (mode L) PNGs whose pixel value is the label id: send the "
            "*_gtFine_labelIds.png files (the *_color.png ones are for viewing)")


def recognises(tree: Tree) -> bool:
    return any(MASK.search(p) for p in tree.paths)


def read(tree: Tree, options: ImportOptions, report: ImportReport) -> list[Sample]:
    masks, superseded = _masks(tree)
    images = _by_name(tree, IMAGE, "images")
    lonely = sorted(masks.keys() - images.keys())
    if lonely:
        raise UploadRejected(f"{SOURCE} has no image <name>_leftImg8bit.png for the masks of {listed(lonely)}: add "
                             "leftImg8bit/<split>/<city>/<name>_leftImg8bit.png for each")
    table = CITYSCAPES_LABELS if options.label_ids is None else options.label_ids
    ids = LabelIds(table, LabelMap(options, report, SOURCE), VOID_LABELS)
    samples = [Sample(stem_of(f"{name}.png"), tree.file(images[name]),
                      IdMask(path, tree.file(path), ids, name, EXPECTED))
               for name, path in masks.items()]
    tree.note_unused(report, IMAGE_SUFFIXES, layout=lambda path: bool(COMPANION.search(path)) or path in superseded)
    return unique_stems(samples, SOURCE)


def _masks(tree: Tree) -> tuple[dict[str, str], set[str]]:
    """({name: labelIds mask}, the gtCoarse masks a gtFine one replaces): gtFine where both are."""
    fine = _by_name(tree, MASK, "masks", "gtFine")
    coarse = _by_name(tree, MASK, "masks", "gtCoarse")
    if not fine and not coarse:
        raise UploadRejected(f"{SOURCE} has no *_gtFine_labelIds.png (or *_gtCoarse_labelIds.png) masks; format "
                             "'cityscapes' reads label-id PNGs (not *_color.png or *_labelTrainIds.png)")
    return {**coarse, **fine}, {path for name, path in coarse.items() if name in fine}


def _by_name(tree: Tree, pattern: re.Pattern[str], what: str, kind: str | None = None) -> dict[str, str]:
    """{name: path} of the files ``pattern`` matches (of ``kind``: gtFine or gtCoarse); a name twice is refused."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in tree.paths:
        match = pattern.search(path)
        if match and (kind is None or match.group(2) == kind):
            found[match.group(1)].append(path)
    twice = [listed(sorted(paths)) for paths in found.values() if len(paths) > 1]
    if twice:
        raise UploadRejected(f"{SOURCE} has {what} of one name in several folders: {'; '.join(twice[:5])}")
    return {name: paths[0] for name, paths in sorted(found.items())}
