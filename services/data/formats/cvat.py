"""CVAT's "Segmentation mask 1.1" export: Pascal VOC's layout (voc.py) with a ``labelmap.txt``.

    labelmap.txt                      # label:R,G,B:parts:actions, one per line ('#' comments)
    ImageSets/Segmentation/<subset>.txt   # the images' stems, one per line (default.txt, train.txt, ...)
    SegmentationClass/<stem>.png      # class masks: each pixel the colour of its label (RGB, palette, or
                                      # 1-channel: value v is the colour (v, v, v))
    SegmentationObject/<stem>.png     # instance masks (not read: classes come from SegmentationClass)
    JPEGImages/<stem>.<ext>           # the images ("save images" on export)

Colours are mapped to label NAMES through the labelmap, then names to the spec's classes; a colour
the labelmap does not define is handled as ``other_labels`` says.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np

from services.data.formats import voc
from services.data.formats.base import IMAGE_SUFFIXES, ImportOptions, ImportReport, LabelMap, Tree, unique_stems
from services.data.formats.voc import images_by_stem, segmentation_stems
from services.data.upload import ReceivedFile, Sample, UploadRejected, as_rgb, listed, open_mask, rgb_codes

LABELMAP = "labelmap.txt"
SOURCE = "the CVAT export"


def recognises(tree: Tree) -> bool:
    return bool(tree.named(LABELMAP))


def read(tree: Tree, options: ImportOptions, report: ImportReport) -> list[Sample]:
    paths = tree.named(LABELMAP)
    if not paths:
        raise UploadRejected(f"{SOURCE} has no {LABELMAP} (format 'cvat_mask' is CVAT's \"Segmentation mask 1.1\")")
    if len(paths) > 1:
        raise UploadRejected(f"the archive holds {len(paths)} {LABELMAP} files ({listed(paths)}): send one export")
    root = posixpath.dirname(paths[0])
    colours = parse_labelmap(tree.text(paths[0]), paths[0])
    labels = LabelMap(options, report, SOURCE)
    labels.require(colours)
    by_code = {(r << 16) | (g << 8) | b: name for name, (r, g, b) in colours.items()}
    stems = segmentation_stems(tree, root)
    masks = {stem: posixpath.join(root, voc.MASKS, f"{stem}.png") for stem in stems}
    unmasked = [f"{stem!r}" for stem, path in masks.items() if path not in tree.files]
    if unmasked:
        raise UploadRejected(f"{SOURCE} lists images {listed(unmasked)} but has no mask for them in "
                             f"{posixpath.join(root, voc.MASKS) + '/'!r}")
    images = images_by_stem(tree, root, stems, SOURCE)
    samples = [Sample(stem, tree.file(images[stem]), _ColourMask(path, tree.file(path), by_code, labels, stem))
               for stem, path in masks.items()]
    objects = posixpath.join(root, voc.OBJECTS) + "/"  # instance masks: part of the layout, not read
    tree.note_unused(report, IMAGE_SUFFIXES, layout=lambda path: path.startswith(objects))
    return unique_stems(samples, SOURCE)


def parse_labelmap(text: str, where: str) -> dict[str, tuple[int, int, int]]:
    """{label: (r, g, b)} from ``label:R,G,B:parts:actions`` lines."""
    colours: dict[str, tuple[int, int, int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(":", 3)  # a label name may hold ':'; the last three fields cannot
        try:
            name, colour = fields[0].strip(), tuple(int(c) for c in fields[1].split(","))
        except (IndexError, ValueError):
            colour = ()
        if len(fields) != 4 or not name or len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise UploadRejected(f"{where} line {number}: expected label:R,G,B:parts:actions, got {line[:80]!r}")
        if name in colours:
            raise UploadRejected(f"{where} line {number}: label {name!r} is defined twice")
        shared = [other for other, c in colours.items() if c == colour]
        if shared:
            raise UploadRejected(f"{where} line {number}: labels {shared[0]!r} and {name!r} share the colour "
                                 f"{list(colour)}, so their pixels cannot be told apart")
        colours[name] = colour  # type: ignore[assignment]
    return colours


@dataclass(frozen=True)
class _ColourMask:
    name: str
    file: ReceivedFile
    by_code: dict[int, str]
    labels: LabelMap
    stem: str

    def local_values(self, size: tuple[int, int], image_name: str) -> np.ndarray:
        with open_mask(self.file, size, image_name) as im:
            # "A mask can have either 1 or 3 channels": a 1-channel pixel v is the colour (v, v, v).
            rgb = np.repeat(np.asarray(im)[..., None], 3, axis=2) if im.mode == "L" else as_rgb(self.name, im)
        codes = rgb_codes(rgb)
        present, inverse = np.unique(codes, return_inverse=True)
        counts = np.bincount(inverse.ravel(), minlength=len(present))
        lut = np.empty(len(present), np.uint8)
        for i, code in enumerate(present.tolist()):
            if code in self.by_code:
                lut[i] = self.labels.value(self.by_code[code], self.stem, int(counts[i]))
            else:
                colour = str([code >> 16, (code >> 8) & 255, code & 255])
                self.labels.report.note("unknown_colours", self.stem, label=colour, pixels=int(counts[i]))
                lut[i] = self.labels.other_value
        return lut[inverse.reshape(codes.shape)]
