"""Which classes each mask of a source contains, cached as a small JSON file.

Building incremental steps needs, for every training image, the set of classes it shows.
Reading every mask is the slow part, so the answer is cached under a cache directory (never
next to the dataset, which is read-only), keyed by the mask files' paths, sizes and mtimes:
an edited or replaced mask invalidates the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from services.data.datasets import SegmentationSource
from services.labels import IGNORE_INDEX

CACHE_VERSION = 1


def class_presence(
    source: SegmentationSource, cache_dir: str | Path | None = None, *, progress: bool = False
) -> list[frozenset[int]]:
    """For each item of ``source``, the set of class indices (ours, void excluded) in its mask."""
    path = _cache_path(source, Path(cache_dir)) if cache_dir is not None else None
    if path is not None and path.is_file():
        cached = _read_cache(path, len(source))
        if cached is not None:
            return cached
    bar = tqdm(range(len(source)), desc=f"scan {source.name}/{source.split} masks", disable=not progress)
    presence = [_mask_classes(source, i) for i in bar]
    if path is not None:
        _write_cache(path, presence)
    return presence


def _mask_classes(source: SegmentationSource, index: int) -> frozenset[int]:
    counts = np.bincount(source.load_mask(index).ravel(), minlength=256)
    counts[IGNORE_INDEX] = 0
    return frozenset(int(c) for c in np.flatnonzero(counts))


def _cache_path(source: SegmentationSource, cache_dir: Path) -> Path:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{source.name}|{source.split}|{source.num_classes}".encode())
    for _, mask in source.items:
        st = mask.stat()
        digest.update(f"|{mask.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{source.name}-{source.split}")
    return cache_dir / "presence" / f"{safe}-{digest.hexdigest()[:20]}.json"


def _read_cache(path: Path, expected: int) -> list[frozenset[int]] | None:
    try:
        data = json.loads(path.read_text())
        classes = data["classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a corrupt cache is simply rebuilt
    if not isinstance(classes, list) or len(classes) != expected:
        return None
    return [frozenset(int(c) for c in cs) for cs in classes]


def _write_cache(path: Path, presence: list[frozenset[int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": CACHE_VERSION, "classes": [sorted(cs) for cs in presence]}))
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
