"""Label-id PNGs (Pascal VOC, Cityscapes): each pixel's value is a label id, and a {name: id}
table says which label. Ids are mapped to names, names BY NAME to the task's local values
(``LabelMap``), one mask at a time through a 256-entry lookup table.

Rules both formats share: an id the table does not name is noted as ``"value <id>"`` among the
report's unknown labels and mapped as ``other_labels`` says (with "reject" the upload is refused,
naming it) -- except 255, which when unnamed is void (ignore), as in VOC and in Strata's own masks.
A format's void labels (``void``) become ignore too, unless the spec names them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from services.data.formats.base import UNNAMED_ID, LabelMap
from services.data.upload import ReceivedFile, UploadRejected, as_rgb, listed, open_mask, rgb_codes
from services.labels import IGNORE_INDEX

ID_VALUES = 256  # an 8-bit mask's ids
VOID_ID = IGNORE_INDEX  # an id no table names that is void rather than unknown


class LabelIds:
    """A format's {name: id} table mapped through the task's ``LabelMap``."""

    def __init__(self, table: Mapping[str, int], labels: LabelMap, void: Collection[str] = ()) -> None:
        labels.require(table)
        self.names = {value: name.strip() for name, value in table.items()}
        self.labels = labels
        self.void = frozenset(void)

    def to_local(self, ids: np.ndarray, stem: str) -> np.ndarray:
        """uint8 [H, W] local values of one mask's uint8 [H, W] ids; its labels noted under ``stem``."""
        counts = np.bincount(ids.ravel(), minlength=ID_VALUES)
        lut = np.full(ID_VALUES, IGNORE_INDEX, np.uint8)
        for value in np.flatnonzero(counts).tolist():
            lut[value] = self._local(value, stem, int(counts[value]))
        return np.take(lut, ids)

    def _local(self, value: int, stem: str, pixels: int) -> int:
        name = self.names.get(value)
        if name is None:
            if value == VOID_ID:
                return IGNORE_INDEX
            self.labels.report.note("unknown_labels", stem, label=f"{UNNAMED_ID}{value}", pixels=pixels)
            return self.labels.other_value
        if name in self.void and name not in self.labels.values:
            return IGNORE_INDEX
        return self.labels.value(name, stem, pixels)


def read_ids(f: ReceivedFile, size: tuple[int, int], image_name: str, expected: str,
             colour_ids: Mapping[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W] ids of a label-id PNG: a grey (L) image's values or a palette (P) image's
    indices -- never its colours; an RGB image's colours only through ``colour_ids`` ({rgb code:
    id}, a format's fixed colour map). ``expected`` says, for a refusal, what this format's masks are."""
    with open_mask(f, size, image_name) as im:
        if im.mode in ("L", "P"):
            return np.asarray(im, dtype=np.uint8)
        if colour_ids is None or im.mode not in ("RGB", "RGBA"):
            raise UploadRejected(f"mask {f.name!r} is a {im.mode} image; {expected}")
        codes = rgb_codes(as_rgb(f.name, im))
    present, inverse = np.unique(codes, return_inverse=True)
    unknown = [c for c in present.tolist() if c not in colour_ids]
    if unknown:
        shown = listed([str([c >> 16, (c >> 8) & 255, c & 255]) for c in unknown], 5)
        raise UploadRejected(f"mask {f.name!r} has colours {shown} outside the colour map; {expected}")
    lut = np.array([colour_ids[c] for c in present.tolist()], np.uint8)
    return lut[inverse.reshape(codes.shape)]


@dataclass(frozen=True)
class IdMask:
    """A sample's label-id PNG, decoded when asked (a ``MaskSource``)."""

    name: str
    file: ReceivedFile
    ids: LabelIds
    stem: str
    expected: str  # what this format's masks are, for a refusal
    colour_ids: Mapping[int, int] | None = None  # RGB masks: the format's colour map, {rgb code: id}

    def local_values(self, size: tuple[int, int], image_name: str) -> np.ndarray:
        ids = read_ids(self.file, size, image_name, self.expected, self.colour_ids)
        return self.ids.to_local(ids, self.stem)
