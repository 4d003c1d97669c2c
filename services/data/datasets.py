"""Readers for fully labelled segmentation datasets on disk (read-only).

Two layouts are understood:

- the directory layout: ``{split}/images/NAME.jpg|jpeg|png`` + ``{split}/masks/NAME.png`` and a
  ``classes.json`` (index -> name) at the root. If class 0 is named "background" it is the
  background; otherwise the dataset has none (CamVid) and background is added at index 0,
  shifting every dataset class by +1;
- Pascal VOC 2012: ``JPEGImages``, ``SegmentationClass`` (palette PNGs) and
  ``ImageSets/Segmentation/{split}.txt``, 21 classes with background.

Either way a reader returns a ``SegmentationSource`` whose masks come out in *our* index space:
0 = background, 1.. = the dataset's classes, 255 = void.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from services.errors import InvalidInput
from services.labels import BACKGROUND_NAME, IGNORE_INDEX, MAX_CLASS_INDEX

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = ".png"

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


class DatasetError(InvalidInput):
    """The dataset on disk is malformed; the message names the file or folder at fault."""


@dataclass(frozen=True)
class SegmentationSource:
    """One split of a labelled dataset: class names (background at 0) and (image, mask) pairs.

    ``raw_to_class`` maps a raw mask value (0..255) to our class index, or -1 for a value the
    dataset does not define; 255 (void) always maps to 255.
    """

    name: str
    split: str
    class_names: tuple[str, ...]
    items: tuple[tuple[Path, Path], ...]
    raw_to_class: np.ndarray = field(repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, index: int) -> Image.Image:
        """The RGB image of item ``index``."""
        path = self.items[index][0]
        with Image.open(path) as im:
            return im.convert("RGB")

    def load_mask(self, index: int) -> np.ndarray:
        """The mask of item ``index`` in our class space: uint8 [H, W], 255 = void."""
        path = self.items[index][1]
        raw = read_index_mask(path)
        mapped = self.raw_to_class[raw]
        if (mapped < 0).any():
            bad = sorted(int(v) for v in np.unique(raw[mapped < 0]))
            raise DatasetError(
                f"mask {path} holds values {bad[:10]} that are not classes of {self.name} "
                f"(defined: 0..{self.num_classes - 1 - self._shift()} and 255 = void)"
            )
        return mapped.astype(np.uint8)

    def subset(self, indices: list[int]) -> "SegmentationSource":
        """The same source restricted to the given items (in the given order)."""
        items = tuple(self.items[i] for i in indices)
        return SegmentationSource(self.name, self.split, self.class_names, items, self.raw_to_class)

    def _shift(self) -> int:
        return int(self.raw_to_class[0])


def read_index_mask(path: Path) -> np.ndarray:
    """A single-channel index mask as uint8 [H, W]; palette PNGs give their indices."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P"):
            raise DatasetError(
                f"mask {path} has mode {im.mode}; expected a single-channel (L) or palette (P) "
                "PNG whose pixel values are class indices"
            )
        return np.asarray(im, dtype=np.uint8)


def open_source(root: str | Path, split: str) -> SegmentationSource:
    """Read split ``split`` of the dataset at ``root``, detecting its layout."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if find_voc_root(root) is not None:
        return read_voc(root, split)
    if (root / "classes.json").is_file() or (root / split).is_dir():
        return read_directory_dataset(root, split)
    raise DatasetError(
        f"{root} is neither a directory-layout dataset (classes.json + {split}/images, "
        f"{split}/masks) nor Pascal VOC 2012 (JPEGImages, SegmentationClass, ImageSets)"
    )


# --- directory layout -----------------------------------------------------------------------
def read_directory_dataset(root: str | Path, split: str) -> SegmentationSource:
    """``{split}/images`` + ``{split}/masks`` paired by file stem, classes from ``classes.json``."""
    root = Path(root)
    names, has_background = read_classes_json(root / "classes.json")
    images = _files_by_stem(root / split / "images", IMAGE_SUFFIXES, "image")
    masks = _files_by_stem(root / split / "masks", (MASK_SUFFIX,), "mask")
    _check_pairing(images, masks, root / split)
    items = tuple((images[s], masks[s]) for s in sorted(images))
    shift = 0 if has_background else 1
    class_names = tuple(names) if has_background else (BACKGROUND_NAME, *names)
    return SegmentationSource(root.name, split, class_names, items, _shift_lut(len(names), shift))


def read_classes_json(path: Path) -> tuple[list[str], bool]:
    """Class names by index from ``classes.json`` (an index -> name object or a list).

    Returns (names, whether index 0 is the background).
    """
    if not path.is_file():
        raise DatasetError(f"{path} is missing: it must map each mask value to a class name")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON: {err}") from None
    if isinstance(raw, list):
        raw = {str(i): n for i, n in enumerate(raw)}
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{path} must be a non-empty object mapping index to class name")
    try:
        by_index = {int(k): v for k, v in raw.items()}
    except ValueError:
        raise DatasetError(f"{path}: keys must be integer class indices, got {sorted(raw)[:5]}") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetError(f"{path}: indices must run 0..{len(by_index) - 1} without gaps, got {sorted(by_index)}")
    names = [by_index[i] for i in range(len(by_index))]
    if any(not isinstance(n, str) or not n.strip() for n in names):
        raise DatasetError(f"{path}: every class name must be a non-empty string")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: class names must be unique")
    has_background = names[0].strip().lower() == BACKGROUND_NAME
    if (len(names) + (0 if has_background else 1)) > IGNORE_INDEX:
        raise DatasetError(f"{path}: at most {MAX_CLASS_INDEX} classes besides background ({IGNORE_INDEX} is void)")
    if not has_background and any(n.strip().lower() == BACKGROUND_NAME for n in names):
        raise DatasetError(f"{path}: 'background' must be class 0 if the dataset has one")
    return names, has_background


def _files_by_stem(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{what} folder {folder} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in suffixes:
            raise DatasetError(f"{path}: {what} files must be {'/'.join(suffixes)}, got {path.suffix or 'no suffix'}")
        if path.stem in found:
            raise DatasetError(
                f"two {what} files share the name {path.stem!r}: {found[path.stem].name} and {path.name}"
            )
        found[path.stem] = path
    if not found:
        raise DatasetError(f"{what} folder {folder} is empty")
    return found


def _check_pairing(images: dict[str, Path], masks: dict[str, Path], where: Path) -> None:
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    problems = []
    if no_mask:
        problems.append(f"{len(no_mask)} image(s) without a mask: {', '.join(images[s].name for s in no_mask[:5])}")
    if no_image:
        problems.append(f"{len(no_image)} mask(s) without an image: {', '.join(masks[s].name for s in no_image[:5])}")
    if problems:
        raise DatasetError(f"{where}: images and masks are paired by file stem; " + "; ".join(problems))


def _shift_lut(num_raw_classes: int, shift: int) -> np.ndarray:
    """Raw value v < num_raw_classes -> v + shift, 255 -> 255, anything else -> -1. int16 [256]."""
    lut = np.full(256, -1, dtype=np.int16)
    lut[:num_raw_classes] = np.arange(num_raw_classes) + shift
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


# --- Pascal VOC 2012 --------------------------------------------------------------------------
def find_voc_root(root: Path) -> Path | None:
    """The folder holding JPEGImages and SegmentationClass: root, root/VOC2012 or root/VOCdevkit/VOC2012."""
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir():
            return cand
    return None


def read_voc(root: str | Path, split: str) -> SegmentationSource:
    """Pascal VOC 2012 segmentation, split ``train`` or ``val`` (any list in ImageSets/Segmentation)."""
    voc = find_voc_root(Path(root))
    if voc is None:
        raise DatasetError(f"{root} holds no JPEGImages + SegmentationClass folders (Pascal VOC 2012)")
    listing = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing} is missing: it lists the image ids of split {split!r}")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{listing} lists no images")
    items = tuple((voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png") for i in ids)
    missing = [str(p) for pair in items for p in pair if not p.is_file()]
    if missing:
        raise DatasetError(f"{listing}: {len(missing)} listed file(s) are missing, e.g. {', '.join(missing[:3])}")
    return SegmentationSource("voc2012", split, VOC_CLASSES, items, _shift_lut(len(VOC_CLASSES), 0))
