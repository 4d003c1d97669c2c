"""Reading a test's archive the way registration does: the spec parsed, the archive unpacked and read
in its format, every mask converted, the report finished."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from services.data.archive import ArchiveLimits
from services.data.formats import Dataset, read_upload
from services.data.multipart import Received
from services.data.upload import PreparedItem, ReceivedFile, prepare_items
from services.jobs.spec import parse_spec

LIMITS = ArchiveLimits(max_bytes=100_000_000, max_ratio=1000)


def png(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **kw)
    return buf.getvalue()


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG")
    return buf.getvalue()


def photo(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def zip_bytes(entries: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data.encode() if isinstance(data, str) else data)
    return buf.getvalue()


@dataclass
class Imported:
    dataset: Dataset
    items: list[PreparedItem]

    def mask(self, stem: str) -> np.ndarray:
        """The stored mask of ``stem`` in local index form."""
        item = next(i for i in self.items if i.stem == stem)
        return np.asarray(Image.open(item.mask_path))

    @property
    def report(self) -> dict:
        return self.dataset.report.as_json()

    def issue(self, kind: str) -> dict | None:
        return next((i for i in self.report["issues"] if i["kind"] == kind), None)


def import_archive(tmp_path: Path, entries: dict[str, bytes | str] | bytes, spec: dict) -> Imported:
    """Read a zip (its entries, or its bytes) with ``spec`` as POST /models/{name}/tasks would."""
    data = entries if isinstance(entries, bytes) else zip_bytes(entries)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    archive = ReceivedFile("export.zip", path, len(data), hashlib.sha256(data).hexdigest())
    parsed = parse_spec(json.dumps(spec))
    dataset = read_upload(Received(texts={}, files={"archive": [archive]}), parsed.format, parsed.import_options(),
                          tmp_path / "work", LIMITS)
    items = prepare_items(dataset.samples, 10**7, tmp_path / "masks")
    dataset.finish(items)
    return Imported(dataset, items)
