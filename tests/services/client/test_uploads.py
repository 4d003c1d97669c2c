"""What `strata submit` sends: a zip as it is, a folder zipped with its layout kept."""

from __future__ import annotations

import zipfile

import pytest

from services.client.uploads import UploadSourceError, upload_file


def test_a_folder_is_zipped_with_its_layout_and_the_zip_removed_afterwards(tmp_path):
    root = tmp_path / "cvat-export"
    (root / "SegmentationClass").mkdir(parents=True)
    (root / "labelmap.txt").write_text("background:0,0,0::\n")
    (root / "SegmentationClass" / "a.png").write_bytes(b"\x89PNG fake")
    (root / ".DS_Store").write_bytes(b"junk")
    with upload_file(root) as (path, name):
        assert name == "cvat-export.zip"
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            assert sorted(infos) == ["SegmentationClass/a.png", "labelmap.txt"]
            assert infos["SegmentationClass/a.png"].compress_type == zipfile.ZIP_STORED  # already compressed
            assert infos["labelmap.txt"].compress_type == zipfile.ZIP_DEFLATED
            assert zf.read("SegmentationClass/a.png") == b"\x89PNG fake"
    assert not path.exists()


def test_a_zip_is_sent_as_it_is(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/a.jpg", b"x")
    with upload_file(archive) as (path, name):
        assert (path, name) == (archive, "data.zip")
    assert archive.exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no files"),
    (lambda p: (p / "x.png").write_bytes(b"png") and p / "x.png", "is not a zip archive; give a zip or a folder"),
])
def test_what_cannot_be_sent_is_named(tmp_path, make, message):
    with pytest.raises(UploadSourceError, match=message):
        with upload_file(make(tmp_path)):
            pass
