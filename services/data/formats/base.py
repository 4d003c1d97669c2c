"""What every annotation-format importer shares.

An importer turns an unpacked archive (``Tree``) into ``Sample``s: an image file and a
``MaskSource`` that yields the image's mask in the task's LOCAL index form (services/data/upload.py)
when asked, one image at a time. Classes are mapped BY NAME through ``LabelMap`` -- never by colour
order, category id or annotation order -- and whatever an export labels that the spec does not
name is handled by the spec's ``other_labels`` and noted in the task's ``ImportReport``.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.data.upload import PreparedItem, ReceivedFile, Sample, UploadRejected, listed
from services.labels import BACKGROUND_INDEX, BACKGROUND_NAME, IGNORE_INDEX

# The formats an upload can come in; "masks" is Strata's own images/ + masks/ layout.
FORMAT_NAMES = ("masks", "coco", "coco_panoptic", "cvat_mask", "voc", "cityscapes", "label_studio")
# What pixels of a label (or colour) the spec does not name become.
OTHER_LABELS = ("reject", "ignore", "background")
RESOURCE_FORKS = "__MACOSX/"  # what macOS's zip adds beside every file: never read
UNNAMED_ID = "value "  # how a report names a pixel value that no label of the export's table names
MAX_JSON_BYTES = 512 * 1024 * 1024  # an annotation file is parsed in memory
EXAMPLES = 10  # stems kept per report entry


@dataclass(frozen=True)
class ImportOptions:
    """What an importer needs of the task's spec.

    local_names: the local classes in mask-value order (value k = local_names[k - 1]); the first
    ``new`` of them are the task's new classes. label_ids: {name: pixel value} of label-id PNGs
    (voc, cityscapes; None: the format's standard table). palette: {name: colour} of palette masks.
    """

    local_names: tuple[str, ...]
    new: int
    other_labels: str = "reject"
    mask_format: str = "index"
    palette: Mapping[str, tuple[int, int, int]] | None = None
    label_ids: Mapping[str, int] | None = None


# --- the report ---------------------------------------------------------------------------------
ISSUES = {
    "no_new_classes": "images whose mask shows none of the task's new classes (kept: they still teach "
                      "background and the classes they show)",
    "empty_masks": "images whose mask is all background or ignore",
    "unknown_labels": "images with labels the spec does not name (mapped as other_labels says)",
    "unknown_colours": "images with mask colours the export's label map does not define (mapped as other_labels "
                       "says)",
    "overlaps_resolved": "images where instances of different classes overlap (the overlap rule decided)",
    "unused_files": "files of the archive no annotation refers to (skipped)",
}


@dataclass
class _Issue:
    stems: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)
    labels: dict[str, set[str]] = field(default_factory=dict)
    pixels: int = 0


class ImportReport:
    """What the import found worth knowing, stored with the task (``tasks.import_report``)."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.images = 0
        self.class_images: dict[str, int] = {}
        self._issues: dict[str, _Issue] = {}

    def note(self, kind: str, stem: str, *, label: str | None = None, pixels: int = 0) -> None:
        issue = self._issues.setdefault(kind, _Issue())
        if stem not in issue.stems:
            issue.stems.add(stem)
            if len(issue.examples) < EXAMPLES:
                issue.examples.append(stem)
        if label is not None:
            issue.labels.setdefault(label, set()).add(stem)
        issue.pixels += pixels

    def labels_of(self, kind: str) -> dict[str, int]:
        """{label: images} of one kind of issue."""
        issue = self._issues.get(kind)
        return {name: len(stems) for name, stems in sorted(issue.labels.items())} if issue else {}

    def summarise(self, items: Sequence[PreparedItem], options: ImportOptions) -> None:
        """Note what every format shares: images without a new class, empty masks, images per class."""
        new = set(range(1, options.new + 1))
        self.images = len(items)
        counts = dict.fromkeys(options.local_names, 0)
        for item in items:
            if not item.labels:
                self.note("empty_masks", item.stem)
            if not item.labels & new:
                self.note("no_new_classes", item.stem)
            for k in item.labels:
                counts[options.local_names[k - 1]] += 1
        self.class_images = counts

    def as_json(self) -> dict[str, Any]:
        issues = []
        for kind, issue in self._issues.items():
            entry: dict[str, Any] = {"kind": kind, "message": ISSUES[kind], "count": len(issue.stems),
                                     "examples": issue.examples}
            if issue.labels:
                entry["labels"] = {name: len(stems) for name, stems in sorted(issue.labels.items())}
            if issue.pixels:
                entry["pixels"] = issue.pixels
            issues.append(entry)
        return {"format": self.format, "images": self.images, "class_images": self.class_images,
                "issues": sorted(issues, key=lambda e: list(ISSUES).index(e["kind"]))}


# --- names ------------------------------------------------------------------------------------
class LabelMap:
    """An export's label names -> local values, by name. A name the spec does not give (not in
    ``classes``, ``also_labelled``, nor "background") becomes ignore (255) or background (0) as
    ``other_labels`` says, and is noted (with "reject", the upload is refused once every mask was
    read, naming them all: ``Dataset.finish``)."""

    def __init__(self, options: ImportOptions, report: ImportReport, source: str) -> None:
        self.values = {name: k for k, name in enumerate(options.local_names, start=1)}
        self.options, self.report, self.source = options, report, source

    def value(self, name: str, stem: str, pixels: int = 0) -> int:
        name = name.strip()
        if name in self.values:
            return self.values[name]
        if name.lower() == BACKGROUND_NAME:
            return BACKGROUND_INDEX
        self.report.note("unknown_labels", stem, label=name, pixels=pixels)
        return self.other_value

    @property
    def other_value(self) -> int:
        return BACKGROUND_INDEX if self.options.other_labels == "background" else IGNORE_INDEX

    def require(self, defined: Iterable[str]) -> None:
        """Refuse spec classes the export does not define at all (a typo, or the wrong export)."""
        defined = {n.strip() for n in defined}
        missing = [n for n in self.options.local_names if n not in defined]
        if missing:
            shown = listed(sorted(defined)) if defined else "none"
            raise UploadRejected(
                f"invalid spec: classes: {self.source} defines no label {listed([repr(n) for n in missing])}; its labels "
                f"are {shown} "
                "(classes are matched to the export's labels by exact name)")


# --- the archive's files ------------------------------------------------------------------------
class Tree:
    """An unpacked archive: {path in the archive: file}. ``paths``: those an importer looks at,
    without the resource forks macOS's zip adds (``__MACOSX/...``), which are never part of an export."""

    def __init__(self, files: Mapping[str, ReceivedFile]) -> None:
        self.files = dict(files)
        self.paths = [p for p in self.files if RESOURCE_FORKS not in p]
        self._json: dict[str, Any] = {}
        self.used: set[str] = set()

    def named(self, basename: str) -> list[str]:
        """Paths whose last part is ``basename``, shortest first."""
        return sorted((p for p in self.paths if posixpath.basename(p) == basename), key=lambda p: (p.count("/"), p))

    def under(self, folder: str, suffixes: Sequence[str] = ()) -> list[str]:
        """Paths inside ``folder`` ('' = anywhere), at any depth, with one of ``suffixes`` if given."""
        prefix = f"{folder.rstrip('/')}/" if folder else ""
        return sorted(p for p in self.paths if p.startswith(prefix)
                      and (not suffixes or p.lower().endswith(tuple(suffixes))))

    def file(self, path: str) -> ReceivedFile:
        self.used.add(path)
        return self.files[path]

    def json(self, path: str, markers: Sequence[bytes] = ()) -> Any:
        """The parsed JSON file at ``path`` (read and parsed once); with ``markers``, None unless the
        file's bytes hold every one of them (a cheap look before parsing a file that may be no export)."""
        if path not in self._json:
            f = self.file(path)
            raw = f.path.read_bytes()
            if not all(marker in raw for marker in markers):
                return None
            if f.size > MAX_JSON_BYTES:
                raise UploadRejected(f"{path!r} is {f.size} bytes; annotation files may be at most {MAX_JSON_BYTES}")
            try:
                self._json[path] = json.loads(raw)
            except RecursionError:
                raise UploadRejected(f"{path!r} is not valid JSON (nested too deeply)") from None
            except (ValueError, UnicodeDecodeError) as err:
                raise UploadRejected(f"{path!r} is not valid JSON: {err}") from None
        return self._json[path]

    def text(self, path: str) -> str:
        try:
            return self.file(path).path.read_text("utf-8-sig")
        except UnicodeDecodeError:
            raise UploadRejected(f"{path!r} is not UTF-8 text") from None

    def image_for(self, reference: str, base: str = "", folders: Sequence[str] = ()) -> str | None:
        """The archive path of an image an annotation refers to as ``reference`` (a path relative to
        ``base``, or to one of ``folders``), or failing that the one file anywhere with its base name."""
        ref = reference.replace("\\", "/").lstrip("/")
        for folder in (base, *folders):
            candidate = posixpath.normpath(posixpath.join(folder, ref)) if folder else posixpath.normpath(ref)
            if candidate in self.files:
                return candidate
        same = self.named(posixpath.basename(ref))
        return same[0] if len(same) == 1 else None

    def note_unused(self, report: ImportReport, suffixes: Sequence[str],
                    layout: Callable[[str], bool] | None = None) -> None:
        """Note the archive's files of kinds an importer reads (``suffixes``) that it did not use,
        except those ``layout`` says the format's layout holds beside what is read (a Cityscapes
        ``*_color.png``): they are where the tool put them, not forgotten."""
        for path in self.paths:
            if path not in self.used and path.lower().endswith(tuple(suffixes)) and not (layout and layout(path)):
                report.note("unused_files", path)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def unique_stems(samples: Sequence[Sample], source: str) -> list[Sample]:
    """Samples sorted by stem; two images with one stem (in different folders) are refused."""
    seen: dict[str, Sample] = {}
    for s in samples:
        if s.stem in seen:
            raise UploadRejected(f"{source}: two images share the name {s.stem!r}: {seen[s.stem].image.name!r} and "
                                 f"{s.image.name!r} (images are stored by file name)")
        seen[s.stem] = s
    if not seen:
        raise UploadRejected(f"{source} holds no annotated images")
    return [seen[k] for k in sorted(seen)]
