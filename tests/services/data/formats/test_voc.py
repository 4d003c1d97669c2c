"""Pascal VOC segmentation exports: palette PNGs (the devkit's colour map) whose pixel index is the
class id, 255 void borders, ImageSets lists, mapped to the spec's classes by name."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.data.formats.voc import VOC_LABELS
from services.data.upload import UploadRejected
from services.labels import voc_colour
from tests.services.data.formats.helpers import import_archive, jpeg, photo, png

H, W = 12, 16
ROOT = "VOCdevkit/VOC2012/"


def voc_colour_map() -> list[int]:
    """The devkit's 256-colour map (VOClabelcolormap.m): bits of the index spread over r, g, b."""
    colours = []
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours += [r, g, b]
    return colours


def voc_mask(ids: np.ndarray) -> bytes:
    """A palette PNG as VOC ships it: indices are ids, the colour map its palette, 255 a void border."""
    im = Image.fromarray(ids, mode="P")
    im.putpalette(voc_colour_map())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def scene(*ids: int) -> np.ndarray:
    """Background with a band of each id (rows 2k..2k+1), and VOC's void border round the first band."""
    out = np.zeros((H, W), np.uint8)
    for k, value in enumerate(ids):
        out[2 * k: 2 * k + 2, 2:10] = value
    if ids:
        out[0:3, 1] = 255
    return out


def export(masks: dict[str, np.ndarray], *, lists: dict[str, list[str]] | None = None, root: str = ROOT,
           images: list[str] | None = None) -> dict[str, bytes | str]:
    entries: dict[str, bytes | str] = {}
    for stem, ids in masks.items():
        entries[f"{root}SegmentationClass/{stem}.png"] = voc_mask(ids)
        entries[f"{root}SegmentationObject/{stem}.png"] = voc_mask((ids > 0).astype(np.uint8))
    for i, stem in enumerate(masks if images is None else images):
        entries[f"{root}JPEGImages/{stem}.jpg"] = jpeg(photo(H, W, seed=i))
    for name, stems in (lists or {}).items():
        entries[f"{root}ImageSets/Segmentation/{name}.txt"] = "".join(f"{s}\n" for s in stems)
    return entries


CAT, DOG, PERSON = VOC_LABELS["cat"], VOC_LABELS["dog"], VOC_LABELS["person"]


def voc(*classes: str, **fields) -> dict:
    """A spec naming the format (recognising it is tested once, with the other formats' importers)."""
    return {"classes": list(classes), "format": "voc", **fields}


def test_the_standard_table_maps_classes_by_name_and_void_to_ignore(tmp_path):
    masks = {"2007_000032": scene(CAT, DOG), "2007_000039": scene(DOG, PERSON)}
    got = import_archive(tmp_path, export(masks, lists={"train": ["2007_000032"], "val": ["2007_000039"]}),
                         {"classes": ["dog", "cat"], "other_labels": "ignore"})
    assert got.dataset.format == "voc"  # recognised from the layout
    first, second = got.mask("2007_000032"), got.mask("2007_000039")
    assert first[0, 5] == 2 and first[2, 5] == 1 and first[0, 1] == 255 and first[-1, -1] == 0
    assert second[0, 5] == 1 and second[2, 5] == 255  # person: not in the spec, ignored
    report = got.report
    assert report["images"] == 2 and report["class_images"] == {"dog": 2, "cat": 1}
    unknown = got.issue("unknown_labels")
    assert unknown["labels"] == {"person": 1} and unknown["examples"] == ["2007_000039"]
    assert unknown["pixels"] == 16
    assert got.issue("unused_files") is None  # SegmentationObject/ is part of the layout


def test_lists_are_united_and_what_they_leave_out_is_reported(tmp_path):
    masks = {"a": scene(CAT), "b": scene(CAT), "c": scene(CAT)}
    entries = export(masks, lists={"train": ["a"], "trainval": ["a", "b"]}, images=["a", "b", "c", "d"])
    got = import_archive(tmp_path, entries, voc("cat"))
    assert [i.stem for i in got.items] == ["a", "b"]
    unused = got.issue("unused_files")
    assert set(unused["examples"]) == {f"{ROOT}SegmentationClass/c.png", f"{ROOT}JPEGImages/c.jpg",
                                       f"{ROOT}JPEGImages/d.jpg"}


def test_without_lists_every_mask_is_read_at_the_archive_top(tmp_path):
    got = import_archive(tmp_path, export({"x": scene(CAT), "y": scene()}, root=""), voc("cat"))
    assert [i.stem for i in got.items] == ["x", "y"]
    assert got.issue("no_new_classes")["examples"] == ["y"]
    assert got.issue("empty_masks")["examples"] == ["y"]


def test_label_ids_name_the_values_and_zero_stays_background(tmp_path):
    ids = scene(3, 7, 9)
    spec = voc("kitty", label_ids={"kitty": 3, "pup": 7}, other_labels="background")
    got = import_archive(tmp_path, export({"a": ids}), spec)
    local = got.mask("a")
    assert local[0, 5] == 1 and local[2, 5] == 0 and local[4, 5] == 0 and local[-1, -1] == 0 and local[0, 1] == 255
    assert got.issue("unknown_labels")["labels"] == {"pup": 1, "value 9": 1}


def test_label_ids_may_name_zero_and_255(tmp_path):
    ids = scene(5)
    spec = voc("edge", label_ids={"edge": 255, "floor": 0, "thing": 5}, other_labels="ignore")
    got = import_archive(tmp_path, export({"a": ids}), spec)
    local = got.mask("a")
    assert local[0, 1] == 1 and local[-1, -1] == 255 and local[0, 5] == 255
    assert got.issue("unknown_labels")["labels"] == {"floor": 1, "thing": 1}


def test_reject_names_every_label_the_spec_does_not(tmp_path):
    masks = {"a": scene(CAT, PERSON), "b": scene(CAT, 40)}
    with pytest.raises(UploadRejected, match=r"'person' \(1 images\), 'value 40' \(1 images\), which the spec does "
                                             r"not name \(pixel values no label is named for: name them in `label_ids`\).*other_labels"):
        import_archive(tmp_path, export(masks), voc("cat"))


def test_other_labels_background(tmp_path):
    got = import_archive(tmp_path, export({"a": scene(CAT, PERSON)}), voc("cat", other_labels="background"))
    assert got.mask("a")[2, 5] == 0 and got.mask("a")[0, 5] == 1


def test_also_labelled_classes_come_after_the_new_ones(tmp_path):
    got = import_archive(tmp_path, export({"a": scene(CAT, PERSON)}), voc("cat", also_labelled=["person"]))
    assert got.mask("a")[0, 5] == 1 and got.mask("a")[2, 5] == 2
    assert got.issue("unknown_labels") is None


def test_a_class_the_table_lacks_is_refused(tmp_path):
    with pytest.raises(UploadRejected, match=r"invalid spec: classes: the Pascal VOC export defines no label "
                                             r"'dining table'; its labels are aeroplane, background"):
        import_archive(tmp_path, export({"a": scene(CAT)}), voc("dining table"))


def test_masks_without_images_are_named(tmp_path):
    entries = export({"a": scene(CAT), "b": scene(CAT), "c": scene(CAT)}, images=["b"])
    with pytest.raises(UploadRejected, match=r"has no image in 'VOCdevkit/VOC2012/JPEGImages/' for a, c"):
        import_archive(tmp_path, entries, voc("cat"))


def test_a_listed_image_without_a_mask_is_named(tmp_path):
    entries = export({"a": scene(CAT)}, lists={"val": ["a", "zz"]})
    with pytest.raises(UploadRejected, match=r"lists images without a mask in 'VOCdevkit/VOC2012/"
                                             r"SegmentationClass/': zz"):
        import_archive(tmp_path, entries, voc("cat"))


def test_grey_masks_hold_ids_too(tmp_path):
    entries = export({"a": scene(CAT)})
    entries[f"{ROOT}SegmentationClass/a.png"] = png(scene(CAT))  # mode L
    got = import_archive(tmp_path, entries, voc("cat"))
    assert got.mask("a")[0, 5] == 1 and got.mask("a")[0, 1] == 255


def test_colour_masks_are_read_through_the_voc_colour_map(tmp_path):
    # What CVAT writes for VOC's own labels without a labelmap.txt: RGB masks in the devkit's colours.
    ids = scene(CAT)
    entries = export({"a": ids})
    colour_map = np.array([voc_colour(v) for v in range(256)], np.uint8)
    entries[f"{ROOT}SegmentationClass/a.png"] = png(colour_map[ids])
    got = import_archive(tmp_path, entries, voc("cat"))
    assert got.mask("a")[0, 5] == 1 and got.mask("a")[0, 1] == 255


def test_colour_masks_outside_the_colour_map_are_refused_with_the_way_out(tmp_path):
    entries = export({"a": scene(CAT)})
    entries[f"{ROOT}SegmentationClass/a.png"] = png(np.full((H, W, 3), 7, np.uint8))
    with pytest.raises(UploadRejected, match=r"mask 'VOCdevkit/VOC2012/SegmentationClass/a.png' has colours "
                                             r"\[7, 7, 7\] outside the colour map; .* labelmap.txt"):
        import_archive(tmp_path, entries, voc("cat"))


def test_a_mask_of_another_size_is_refused(tmp_path):
    entries = export({"a": scene(CAT)})
    entries[f"{ROOT}SegmentationClass/a.png"] = voc_mask(np.zeros((H, W + 1), np.uint8))
    with pytest.raises(UploadRejected, match=r"is 17x12 but its image 'VOCdevkit/VOC2012/JPEGImages/a.jpg' is 16x12"):
        import_archive(tmp_path, entries, voc("cat"))


def test_two_exports_in_one_archive_are_refused(tmp_path):
    entries = {**export({"a": scene(CAT)}), **export({"b": scene(CAT)}, root="VOCdevkit/VOC2007/")}
    with pytest.raises(UploadRejected, match="holds 2 SegmentationClass folders"):
        import_archive(tmp_path, entries, voc("cat"))


def test_format_voc_without_masks_is_refused(tmp_path):
    with pytest.raises(UploadRejected, match=r"has no SegmentationClass/\*.png masks"):
        import_archive(tmp_path, {"JPEGImages/a.jpg": jpeg(photo(H, W))}, voc("cat"))


def test_empty_label_ids_replace_the_table_too(tmp_path):
    with pytest.raises(UploadRejected, match=r"defines no label 'cat'; its labels are background"):
        import_archive(tmp_path, export({"a": scene(CAT)}), voc("cat", label_ids={}))
