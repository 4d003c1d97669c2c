"""Strata's own format: images and masks paired by file stem, as loose files or an archive's
``images/`` + ``masks/``; masks hold class values (``mask_format: "index"``) or the spec's palette
colours (``"palette"``)."""

from __future__ import annotations

from collections.abc import Sequence

from services.data.archive import FOLDERS, check_masks_layout
from services.data.formats.base import ImportOptions, ImportReport, Tree
from services.data.upload import MaskFormat, ReceivedFile, Sample, pair_files


def recognises(tree: Tree) -> bool:
    # A masks/ folder at the top: no tool's export has one.
    return any(path.startswith("masks/") for path in tree.files)


def read(tree: Tree, options: ImportOptions, report: ImportReport) -> list[Sample]:
    found: dict[str, list[ReceivedFile]] = {folder: [] for folder in FOLDERS}
    for path in tree.files:
        check_masks_layout(path)
        found[path.split("/", 1)[0]].append(tree.file(path))
    return read_files(found["images"], found["masks"], options)


def read_files(images: Sequence[ReceivedFile], masks: Sequence[ReceivedFile], options: ImportOptions) -> list[Sample]:
    palette = dict(options.palette) if options.mask_format == "palette" and options.palette else None
    return MaskFormat(options.local_names, palette).samples(pair_files(images, masks))
