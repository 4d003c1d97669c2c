"""CVAT "Segmentation mask 1.1" exports: colours -> label names -> the spec's classes, by name."""

from __future__ import annotations

import numpy as np
import pytest

from services.data.upload import UploadRejected
from tests.services.data.formats.helpers import import_archive, jpeg, photo, png

# As CVAT writes it: a header comment, background first (here not black, as in CVAT's own docs).
LABELS = {"background": (0, 128, 0), "car": (10, 10, 128), "person": (10, 128, 0), "tree": (108, 0, 100)}
LABELMAP = "# label:color_rgb:parts:actions\n" + "".join(
    f"{name}:{r},{g},{b}::\n" for name, (r, g, b) in LABELS.items())


def painted(names: np.ndarray, colours=LABELS) -> np.ndarray:
    """An RGB mask from an array of label names."""
    out = np.zeros((*names.shape, 3), np.uint8)
    for name, colour in colours.items():
        out[names == name] = colour
    return out


def scene(seed: int) -> np.ndarray:
    """Label names of a 12 x 16 image: background, a car block, a person column, a tree corner."""
    names = np.full((12, 16), "background", dtype=object)
    names[2:6, 3 + seed:9 + seed] = "car"
    names[:, 12] = "person"
    names[9:, :3] = "tree"
    return names


def export(n: int = 3, *, labelmap: str = LABELMAP, subsets=("default",), images: bool = True,
           masks: dict[str, np.ndarray] | None = None) -> dict[str, bytes | str]:
    entries: dict[str, bytes | str] = {"labelmap.txt": labelmap}
    stems = [f"frame_{i:06d}" for i in range(n)]
    for i, stem in enumerate(stems):
        entries[f"SegmentationClass/{stem}.png"] = png((masks or {}).get(stem, painted(scene(i))))
        entries[f"SegmentationObject/{stem}.png"] = png(np.zeros((12, 16, 3), np.uint8))
        if images:
            entries[f"JPEGImages/{stem}.jpg"] = jpeg(photo(seed=i))
    for subset in subsets:
        entries[f"ImageSets/Segmentation/{subset}.txt"] = "\n".join(stems) + "\n"
    return entries


def test_colours_map_to_the_spec_classes_by_name_not_by_labelmap_order(tmp_path):
    # The spec lists person before car: values follow the spec, whatever order the labelmap has.
    got = import_archive(tmp_path, export(), {"classes": ["person", "car"], "also_labelled": ["tree"]})
    assert got.dataset.format == "cvat_mask"  # recognised from its labelmap.txt
    expected = np.vectorize({"background": 0, "person": 1, "car": 2, "tree": 3}.get)(scene(1)).astype(np.uint8)
    assert np.array_equal(got.mask("frame_000001"), expected)
    assert got.report["images"] == 3 and got.report["class_images"] == {"person": 3, "car": 3, "tree": 3}
    assert got.report["issues"] == []


@pytest.mark.parametrize("policy, value", [("ignore", 255), ("background", 0)])
def test_labels_the_spec_does_not_name_follow_other_labels_and_are_reported(tmp_path, policy, value):
    got = import_archive(tmp_path, export(), {"classes": ["car"], "other_labels": policy})
    mask = got.mask("frame_000000")
    assert set(np.unique(mask[scene(0) == "person"])) == {value}
    assert set(np.unique(mask[scene(0) == "car"])) == {1}
    unknown = got.issue("unknown_labels")
    assert unknown["labels"] == {"person": 3, "tree": 3} and unknown["count"] == 3
    assert unknown["pixels"] == 3 * (12 + 9)


def test_labels_the_spec_does_not_name_are_rejected_by_default_naming_them(tmp_path):
    with pytest.raises(UploadRejected, match=r"labels pixels with 'person' \(3 images\), 'tree' \(3 images\).*"
                                             r"other_labels"):
        import_archive(tmp_path, export(), {"classes": ["car"]})


def test_colours_outside_the_labelmap_are_reported_or_rejected(tmp_path):
    odd = painted(scene(0))
    odd[0, 0] = (1, 2, 3)
    masks = {"frame_000001": odd}
    with pytest.raises(UploadRejected, match=r"colour \[1, 2, 3\] \(1 images\)"):
        import_archive(tmp_path, export(masks=masks), {"classes": ["car", "person", "tree"]})
    got = import_archive(tmp_path / "ok", export(masks=masks), {"classes": ["car", "person", "tree"],
                                                                "other_labels": "ignore"})
    assert got.mask("frame_000001")[0, 0] == 255
    assert got.issue("unknown_colours")["labels"] == {"[1, 2, 3]": 1}


def test_a_spec_class_the_labelmap_lacks_is_refused_listing_its_labels(tmp_path):
    with pytest.raises(UploadRejected, match="classes: the CVAT export defines no label 'Car'; its labels are "
                                             "background, car, person, tree"):
        import_archive(tmp_path, export(), {"classes": ["Car"], "other_labels": "ignore"})


def test_every_subset_list_is_read_and_a_wrapper_folder_is_fine(tmp_path):
    entries = export(4, subsets=())
    entries["ImageSets/Segmentation/train.txt"] = "frame_000000\nframe_000001\n"
    entries["ImageSets/Segmentation/val.txt"] = "frame_000002\n"
    wrapped = {f"task_12_export/{k}": v for k, v in entries.items()}
    got = import_archive(tmp_path, wrapped, {"classes": ["car", "person", "tree"]})
    assert [i.stem for i in got.items] == ["frame_000000", "frame_000001", "frame_000002"]
    # frame 3 is in the archive but in no list: skipped, and said so.
    assert set(got.issue("unused_files")["examples"]) == {"task_12_export/JPEGImages/frame_000003.jpg",
                                                          "task_12_export/SegmentationClass/frame_000003.png"}


def test_one_channel_and_palette_masks_are_read_as_colours(tmp_path):
    grey = {"background": (0, 0, 0), "car": (7, 7, 7)}
    labelmap = "background:0,0,0::\ncar:7,7,7::\n"
    names = scene(0)
    names[names != "car"] = "background"
    single = png(painted(names, grey)[..., 0])  # mode L
    entries = export(1, labelmap=labelmap)
    entries["SegmentationClass/frame_000000.png"] = single
    got = import_archive(tmp_path, entries, {"classes": ["car"]})
    assert np.array_equal(got.mask("frame_000000"), (names == "car").astype(np.uint8))


@pytest.mark.parametrize("change, message", [
    (lambda e: e.pop("JPEGImages/frame_000001.jpg"), "no image in 'JPEGImages/' for frame_000001: export with the images \\(CVAT: \"Save images\"\\)"),
    (lambda e: e.pop("SegmentationClass/frame_000001.png"), "lists images 'frame_000001' but has no mask for them in 'SegmentationClass/'"),
    (lambda e: e.update({"labelmap.txt": "car;1,2,3\n"}), r"labelmap.txt line 1: expected label:R,G,B"),
    (lambda e: e.update({"labelmap.txt": "car:1,2,3::\nbus:1,2,3::\n"}), "share the colour"),
    (lambda e: e.update({"labelmap.txt": "car:1,2,300::\n"}), "line 1: expected"),
    (lambda e: e.update({"SegmentationClass/frame_000001.png": png(np.zeros((5, 5, 3), np.uint8))}),
     "is 5x5 but its image"),
    (lambda e: e.update({"x/labelmap.txt": LABELMAP}), "holds 2 labelmap.txt files"),
])
def test_broken_exports_are_refused_naming_the_file(tmp_path, change, message):
    entries = export()
    change(entries)
    with pytest.raises(UploadRejected, match=message):
        import_archive(tmp_path, entries, {"classes": ["car", "person", "tree"]})


def test_the_format_named_in_the_spec_is_used_and_loose_files_cannot_be_an_export(tmp_path):
    got = import_archive(tmp_path, export(), {"classes": ["car", "person", "tree"], "format": "cvat_mask"})
    assert got.dataset.format == "cvat_mask"
    with pytest.raises(UploadRejected, match="format 'cvat_mask' is CVAT"):
        import_archive(tmp_path / "b", {"images/a.jpg": jpeg(photo()), "masks/a.png": png(np.zeros((12, 16), np.uint8))},
                       {"classes": ["car"], "format": "cvat_mask"})
