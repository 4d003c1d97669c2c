"""Dataset readers on small generated folders: directory layout, VOC layout, pairing errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.data.datasets import DatasetError, SegmentationSource, open_source, read_directory_dataset
from services.data.presence import class_presence
from services.data.synthetic import write_shapes_dataset

# The real data set lies beside the checkout (../shared); the suite must pass without it too.
CAMVID = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "camvid"


def _write_pair(split_dir: Path, stem: str, mask: np.ndarray, image_suffix: str = ".png") -> None:
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    h, w = mask.shape
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(split_dir / "images" / f"{stem}{image_suffix}")
    Image.fromarray(mask.astype(np.uint8)).save(split_dir / "masks" / f"{stem}.png")


def _no_background_dataset(root: Path) -> Path:
    """CamVid-like: classes.json has no background; masks use 0..1 and 255."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps({"0": "Sky", "1": "Road"}))
    _write_pair(root / "train", "b", np.array([[0, 0], [1, 255]]), ".jpg")
    _write_pair(root / "train", "a", np.array([[1, 1], [1, 1]]))
    return root


def test_directory_layout_with_background(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path / "shapes", {"train": 3, "val": 2}, size=32, num_shapes=2)
    src = open_source(root, "train")
    assert src.class_names == ("background", "square", "disc")
    assert len(src) == 3 and src.split == "train"
    for image_path, mask_path in src.items:
        assert image_path.stem == mask_path.stem
    mask = src.load_mask(0)
    assert mask.dtype == np.uint8 and mask.shape == (32, 32)
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert src.load_image(0).mode == "RGB"
    assert len(open_source(root, "val")) == 2


def test_dataset_without_background_is_shifted_by_one(tmp_path: Path) -> None:
    src = read_directory_dataset(_no_background_dataset(tmp_path / "d"), "train")
    assert src.class_names == ("background", "Sky", "Road")
    assert [p.name for p, _ in src.items] == ["a.png", "b.jpg"]  # paired by stem, sorted
    assert src.load_mask(0).tolist() == [[2, 2], [2, 2]]
    assert src.load_mask(1).tolist() == [[1, 1], [2, 255]]


def test_classes_json_as_list_and_errors(tmp_path: Path) -> None:
    root = _no_background_dataset(tmp_path / "d")
    (root / "classes.json").write_text(json.dumps(["background", "Sky"]))
    assert read_directory_dataset(root, "train").class_names == ("background", "Sky")
    (root / "classes.json").write_text(json.dumps({"0": "Sky", "2": "Road"}))
    with pytest.raises(DatasetError, match="without gaps"):
        read_directory_dataset(root, "train")
    (root / "classes.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_directory_dataset(root, "train")
    (root / "classes.json").write_text(json.dumps({"0": "Sky", "1": "Sky"}))
    with pytest.raises(DatasetError, match="unique"):
        read_directory_dataset(root, "train")
    (root / "classes.json").unlink()
    with pytest.raises(DatasetError, match="classes.json is missing"):
        open_source(root, "train")


def test_mask_value_outside_the_classes_is_named(tmp_path: Path) -> None:
    root = _no_background_dataset(tmp_path / "d")
    _write_pair(root / "train", "c", np.array([[0, 7], [7, 1]]))
    src = read_directory_dataset(root, "train")
    with pytest.raises(DatasetError, match=r"c\.png holds values \[7\]"):
        src.load_mask(2)


def test_unpaired_files_are_listed(tmp_path: Path) -> None:
    root = _no_background_dataset(tmp_path / "d")
    Image.new("RGB", (2, 2)).save(root / "train" / "images" / "lonely.jpg")
    with pytest.raises(DatasetError, match=r"1 image\(s\) without a mask: lonely\.jpg"):
        read_directory_dataset(root, "train")
    (root / "train" / "images" / "lonely.jpg").unlink()
    Image.new("L", (2, 2)).save(root / "train" / "masks" / "orphan.png")
    with pytest.raises(DatasetError, match=r"1 mask\(s\) without an image: orphan\.png"):
        read_directory_dataset(root, "train")


def test_duplicate_stems_wrong_suffixes_and_missing_folders(tmp_path: Path) -> None:
    root = _no_background_dataset(tmp_path / "d")
    Image.new("RGB", (2, 2)).save(root / "train" / "images" / "a.jpg")  # a.png exists too
    with pytest.raises(DatasetError, match="share the name 'a'"):
        read_directory_dataset(root, "train")
    (root / "train" / "images" / "a.jpg").unlink()
    Image.new("L", (2, 2)).save(root / "train" / "masks" / "a.jpg")
    with pytest.raises(DatasetError, match="mask files must be .png"):
        read_directory_dataset(root, "train")
    with pytest.raises(DatasetError, match="does not exist"):
        read_directory_dataset(root, "val")
    with pytest.raises(DatasetError, match="does not exist"):
        open_source(tmp_path / "nowhere", "train")


def test_rgb_mask_is_refused(tmp_path: Path) -> None:
    root = _no_background_dataset(tmp_path / "d")
    Image.new("RGB", (2, 2)).save(root / "train" / "masks" / "a.png")
    src = read_directory_dataset(root, "train")
    with pytest.raises(DatasetError, match="mode RGB"):
        src.load_mask(0)


def _write_voc(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
    palette[255 * 3 : 256 * 3] = [224, 224, 192]
    for name, values in {"2007_000001": [[0, 15], [255, 15]], "2007_000002": [[20, 1], [0, 0]]}.items():
        Image.new("RGB", (2, 2), (10, 20, 30)).save(voc / "JPEGImages" / f"{name}.jpg")
        mask = Image.fromarray(np.array(values, np.uint8), mode="P")
        mask.putpalette(palette)
        mask.save(voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2007_000002\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000002\n")
    return voc


def test_voc_layout(tmp_path: Path) -> None:
    voc = _write_voc(tmp_path / "voc")
    src = open_source(tmp_path / "voc", "train")  # found under VOCdevkit/VOC2012
    assert src.num_classes == 21 and src.class_names[0] == "background" and src.class_names[15] == "person"
    assert len(src) == 2
    assert src.load_mask(0).tolist() == [[0, 15], [255, 15]]  # palette indices, not colours
    assert len(open_source(voc, "val")) == 1
    with pytest.raises(DatasetError, match="test.txt is missing"):
        open_source(voc, "test")
    (voc / "SegmentationClass" / "2007_000002.png").unlink()
    with pytest.raises(DatasetError, match="1 listed file"):
        open_source(voc, "val")


def test_class_presence_is_cached_and_invalidated(tmp_path: Path) -> None:
    root = _no_background_dataset(tmp_path / "d")
    src = read_directory_dataset(root, "train")
    cache = tmp_path / "cache"
    assert class_presence(src, cache) == [frozenset({2}), frozenset({1, 2})]
    [cache_file] = (cache / "presence").iterdir()
    # The cache is what answers the second call: doctor it and see the doctored answer.
    cache_file.write_text(json.dumps({"version": 1, "classes": [[1], [1]]}))
    assert class_presence(src, cache) == [frozenset({1}), frozenset({1})]
    # Rewriting a mask changes its size/mtime: the stale cache is not used.
    _write_pair(root / "train", "a", np.array([[0, 0, 0], [0, 0, 0]]))
    src = read_directory_dataset(root, "train")
    assert class_presence(src, cache) == [frozenset({1}), frozenset({1, 2})]
    assert class_presence(src) == [frozenset({1}), frozenset({1, 2})]  # no cache dir: computed


def test_subset_keeps_classes(tmp_path: Path) -> None:
    src = read_directory_dataset(_no_background_dataset(tmp_path / "d"), "train")
    sub = src.subset([1])
    assert isinstance(sub, SegmentationSource) and len(sub) == 1 and sub.class_names == src.class_names
    assert sub.items[0] == src.items[1]


@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid is not on this machine")
def test_real_camvid_reads_as_twelve_classes() -> None:
    src = open_source(CAMVID, "val")
    assert len(src) == 101
    assert src.class_names[:3] == ("background", "Sky", "Building") and src.num_classes == 12
    mask = src.load_mask(0)
    assert mask.shape == (360, 480)
    values = set(np.unique(mask).tolist())
    assert values <= set(range(1, 12)) | {255} and len(values) > 3
