"""Reading an upload in any accepted format into samples (image + local-index mask source).

Loose files ``images`` + ``masks`` are Strata's own format ("masks"). One zip ``archive`` is read
as the spec's ``format`` says or, without one, as its layout is recognised (``recognise``, in the
order of ``FORMATS``: the first importer that claims the archive reads it). Each importer is a
module here with ``recognises(tree)`` and ``read(tree, options, report)``; see base.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from services.data.archive import ArchiveLimits, open_archive
from services.data.formats.base import FORMAT_NAMES, UNNAMED_ID, ImportOptions, ImportReport, Tree
from services.data.multipart import Received
from services.data.upload import PreparedItem, Sample, UploadRejected, listed

# The importer modules, in the order they are asked whether they recognise an archive: the most
# specific marker first (a labelmap.txt, a masks/ folder), JSON content next, folder names last.
FORMATS = {
    "cvat_mask": "services.data.formats.cvat",
    "masks": "services.data.formats.masks",
    "coco_panoptic": "services.data.formats.coco_panoptic",
    "coco": "services.data.formats.coco",
    "label_studio": "services.data.formats.label_studio",
    "cityscapes": "services.data.formats.cityscapes",
    "voc": "services.data.formats.voc",
}
assert set(FORMATS) == set(FORMAT_NAMES)


@dataclass
class Dataset:
    """An upload read: its format, its samples and the report the import is writing."""

    format: str
    samples: list[Sample]
    report: ImportReport
    options: ImportOptions

    def finish(self, items: Sequence[PreparedItem]) -> None:
        """After every mask was converted: refuse labels the spec does not name (other_labels
        "reject"), and note what every format shares."""
        _check_unknown(self.report, self.options, self.format)
        self.report.summarise(items, self.options)


def importer(fmt: str) -> ModuleType:
    return importlib.import_module(FORMATS[fmt])


def read_upload(received: Received, fmt: str | None, options: ImportOptions, workdir: Path,
                limits: ArchiveLimits) -> Dataset:
    """The samples of a request's files ``images`` + ``masks`` or its one zip ``archive``."""
    archives = received.files_of("archive")
    loose = received.files_of("images") or received.files_of("masks")
    if archives and loose:
        raise UploadRejected("send either files `images` + `masks` or one `archive`, not both")
    if len(archives) > 1:
        raise UploadRejected(f"send one `archive`, not {len(archives)}: {listed([a.name for a in archives])}")
    if not archives:
        if fmt not in (None, "masks"):
            raise UploadRejected(f"invalid spec: format: a {fmt!r} export is read from one zip `archive` (the "
                                 "export as the tool wrote it); files `images` + `masks` are the \"masks\" format")
        report = ImportReport("masks")
        masks = importer("masks")
        return Dataset("masks", masks.read_files(received.files_of("images"), received.files_of("masks"), options),
                       report, options)
    with open_archive(archives[0], limits) as opened:
        tree = Tree(opened.extract(workdir / "archive"))
    fmt = fmt or recognise(tree)
    report = ImportReport(fmt)
    return Dataset(fmt, importer(fmt).read(tree, options, report), report, options)


def recognise(tree: Tree) -> str:
    """The format of an archive from its layout (and its JSON's shape)."""
    for fmt in FORMATS:
        if importer(fmt).recognises(tree):
            return fmt
    raise UploadRejected(
        "invalid spec: format: the archive's layout is not one Strata recognises; name it in the spec's `format` "
        f"({', '.join(FORMAT_NAMES)}). Recognised: images/ + masks/ (masks), a COCO annotations JSON (coco, "
        "coco_panoptic), labelmap.txt + SegmentationClass/ (cvat_mask), SegmentationClass/ + JPEGImages/ "
        "(voc), gtFine/ *_labelIds.png (cityscapes), a Label Studio JSON export (label_studio)")


def _check_unknown(report: ImportReport, options: ImportOptions, fmt: str) -> None:
    if options.other_labels != "reject":
        return
    names = report.labels_of("unknown_labels")
    colours = report.labels_of("unknown_colours")
    if not names and not colours:
        return
    found = [f"{name!r} ({n} images)" for name, n in names.items()]
    found += [f"colour {colour} ({n} images)" for colour, n in colours.items()]
    # Label-id formats note an id that their table does not name as "value <id>": it needs a name first.
    unnamed = " (pixel values no label is named for: name them in `label_ids`)" if any(
        name.startswith(UNNAMED_ID) for name in names) else ""
    raise UploadRejected(
        f"the {fmt} export labels pixels with {listed(found)}, which the spec does not name{unnamed}: add each "
        "label to `classes` (new) or `also_labelled` (existing), or set `other_labels` to \"ignore\" (not "
        "trained on) or \"background\"")
