"""What ``strata submit`` sends: a zip as it is, or a folder zipped on the way (images and masks,
or an annotation tool's export as the tool wrote it: the server recognises the layout)."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.errors import InvalidInput

# Already compressed: stored as they are, which is faster and no larger.
STORED_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".zip", ".gz"})


class UploadSourceError(InvalidInput):
    """The folder or zip to submit cannot be used; the message names it."""


@contextmanager
def upload_file(source: Path) -> Iterator[tuple[Path, str]]:
    """(a zip file to send, its name): ``source`` itself when it is a zip, else a temporary zip of the
    folder, deleted afterwards."""
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise UploadSourceError(f"{source} is not a zip archive; give a zip or a folder")
        yield source, source.name
        return
    if not source.is_dir():
        raise UploadSourceError(f"{source} does not exist")
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UploadSourceError(f"folder {source} holds no files")
    with tempfile.TemporaryDirectory(prefix="strata-upload-") as tmp:
        archive = Path(tmp) / f"{source.resolve().name or 'upload'}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for path in files:
                method = zipfile.ZIP_STORED if path.suffix.lower() in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
                zf.write(path, path.relative_to(source).as_posix(), compress_type=method)
        yield archive, archive.name
