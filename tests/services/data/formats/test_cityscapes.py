"""Cityscapes-style label-id PNGs in the download's layout: leftImg8bit/ images paired with
gtFine/ (or gtCoarse/) *_labelIds.png masks by name, ids mapped to the spec's classes by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.data.formats.cityscapes import CITYSCAPES_LABELS
from services.data.upload import UploadRejected
from tests.services.data.formats.helpers import import_archive, photo, png

H, W = 12, 16
ID = CITYSCAPES_LABELS
# An id's colour in *_color.png (cityscapesScripts' labels.py), only to write the companion file.
COLOURS = {ID["road"]: (128, 64, 128), ID["car"]: (0, 0, 142), ID["person"]: (220, 20, 60)}


def street(*extra: int) -> np.ndarray:
    """Label ids of a frame: the recording car's hood (ego vehicle) at the bottom, an unlabeled corner,
    road, a car, a person, then a band of each ``extra`` id."""
    ids = np.full((H, W), ID["road"], np.uint8)
    ids[-2:] = ID["ego vehicle"]
    ids[0, 0] = ID["unlabeled"]
    ids[3:6, 2:8] = ID["car"]
    ids[2:8, 12] = ID["person"]
    for k, value in enumerate(extra):
        ids[8 + k, :] = value
    return ids


def export(frames: dict[str, np.ndarray], *, split: str = "train", kind: str = "gtFine",
           images: list[str] | None = None) -> dict[str, bytes | str]:
    """The download's files of ``frames`` ({<city>_<seq>_<frame>: label ids}), companions included."""
    entries: dict[str, bytes | str] = {}
    for i, (name, ids) in enumerate(frames.items()):
        folder = f"{kind}/{split}/{name.split('_')[0]}/{name}_{kind}"
        entries[f"{folder}_labelIds.png"] = png(ids)
        colour = np.zeros((H, W, 3), np.uint8)
        for value, rgb in COLOURS.items():
            colour[ids == value] = rgb
        entries[f"{folder}_color.png"] = png(colour)
        entries[f"{folder}_instanceIds.png"] = png(ids.astype(np.uint16) * 1000)
        entries[f"{folder}_labelTrainIds.png"] = png(np.where(ids == ID["car"], 13, 255).astype(np.uint8))
        entries[f"{folder}_polygons.json"] = json.dumps({"imgHeight": H, "imgWidth": W, "objects": []})
    for i, name in enumerate(frames if images is None else images):
        entries[f"leftImg8bit/{split}/{name.split('_')[0]}/{name}_leftImg8bit.png"] = png(photo(H, W, seed=i))
    return entries


FRAMES = {"aachen_000000_000019": street(), "bochum_000000_000313": street(ID["static"])}


def cityscapes(*classes: str, **fields) -> dict:
    """A spec naming the format (recognising it is tested once, with the other formats' importers)."""
    return {"classes": list(classes), "format": "cityscapes", **fields}


def test_the_standard_table_maps_classes_by_name_and_voids_to_ignore(tmp_path):
    got = import_archive(tmp_path, export(FRAMES), {"classes": ["person", "car"], "other_labels": "background"})
    assert got.dataset.format == "cityscapes"  # recognised from the layout
    assert [i.stem for i in got.items] == ["aachen_000000_000019", "bochum_000000_000313"]
    local = got.mask("bochum_000000_000313")
    assert local[4, 4] == 2 and local[4, 12] == 1  # car, person: by the spec's order
    assert local[1, 1] == 0 and local[8, 0] == 0  # road, static: not in the spec -> background
    assert local[0, 0] == 255 and (local[-2:] == 255).all()  # unlabeled, ego vehicle: void
    unknown = got.issue("unknown_labels")
    assert unknown["labels"] == {"road": 2, "static": 1} and unknown["count"] == 2
    assert got.report["class_images"] == {"person": 2, "car": 2}
    assert got.issue("unused_files") is None  # *_color.png etc. are the layout's, not forgotten


def test_other_labels_ignore(tmp_path):
    got = import_archive(tmp_path, export(FRAMES), cityscapes("car", other_labels="ignore"))
    local = got.mask("aachen_000000_000019")
    assert local[4, 4] == 1 and local[1, 1] == 255 and local[4, 12] == 255
    assert got.issue("unknown_labels")["labels"] == {"person": 2, "road": 2, "static": 1}


def test_reject_names_every_label_the_spec_does_not_but_not_the_voids(tmp_path):
    with pytest.raises(UploadRejected, match=r"labels pixels with 'road' \(2 images\), 'static' \(1 images\), which"):
        import_archive(tmp_path, export(FRAMES), cityscapes("car", also_labelled=["person"]))


def test_a_void_label_the_spec_names_is_a_class(tmp_path):
    got = import_archive(tmp_path, export(FRAMES), cityscapes("ego vehicle", other_labels="ignore"))
    local = got.mask("aachen_000000_000019")
    assert (local[-2:] == 1).all() and local[0, 0] == 255 and local[4, 4] == 255


def test_label_ids_name_the_values(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    ids[2:4] = 1
    ids[5:7] = 2
    ids[8] = 9
    ids[10] = 255
    spec = cityscapes("lane", label_ids={"unlabeled": 0, "lane": 1, "curb": 2}, other_labels="background")
    got = import_archive(tmp_path, export({"frankfurt_000000_000294": ids}), spec)
    local = got.mask("frankfurt_000000_000294")
    assert local[0, 0] == 255 and local[2, 0] == 1 and local[5, 0] == 0 and local[8, 0] == 0 and local[10, 0] == 255
    assert got.issue("unknown_labels")["labels"] == {"curb": 1, "value 9": 1}


def test_a_class_the_table_lacks_is_refused(tmp_path):
    with pytest.raises(UploadRejected, match=r"invalid spec: classes: the Cityscapes export defines no label "
                                             r"'automobile'; its labels are bicycle, bridge"):
        import_archive(tmp_path, export(FRAMES), cityscapes("automobile"))


def test_coarse_labels_are_read_where_no_fine_ones_are(tmp_path):
    entries = {**export({"erlangen_000000_000019": street()}, split="train_extra", kind="gtCoarse"),
               **export(FRAMES), **export(FRAMES, kind="gtCoarse", images=[])}
    entries["gtCoarse/train/aachen/aachen_000000_000019_gtCoarse_labelIds.png"] = png(np.zeros((H, W), np.uint8))
    got = import_archive(tmp_path, entries, cityscapes("car", other_labels="ignore"))
    assert [i.stem for i in got.items] == ["aachen_000000_000019", "bochum_000000_000313", "erlangen_000000_000019"]
    assert got.mask("aachen_000000_000019")[4, 4] == 1  # the fine mask, not the coarse all-unlabeled one
    assert got.mask("erlangen_000000_000019")[4, 4] == 1
    assert got.issue("unused_files") is None


def test_images_without_a_mask_are_reported(tmp_path):
    entries = export(FRAMES, images=[*FRAMES, "berlin_000000_000019"])
    got = import_archive(tmp_path, entries, cityscapes("car", other_labels="ignore"))
    assert got.issue("unused_files")["examples"] == ["leftImg8bit/train/berlin/berlin_000000_000019_leftImg8bit.png"]
    assert len(got.items) == 2


def test_masks_without_images_are_named(tmp_path):
    with pytest.raises(UploadRejected, match=r"has no image <name>_leftImg8bit.png for the masks of "
                                             r"aachen_000000_000019, bochum_000000_000313"):
        import_archive(tmp_path, export(FRAMES, images=[]), cityscapes("car"))


def test_one_name_in_two_folders_is_refused(tmp_path):
    entries = {**export(FRAMES), **export({"aachen_000000_000019": street()}, split="val")}
    with pytest.raises(UploadRejected, match=r"masks of one name in several folders: "
                                             r"gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png, "
                                             r"gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png"):
        import_archive(tmp_path, entries, cityscapes("car"))


def test_colour_masks_are_refused(tmp_path):
    entries = export(FRAMES)
    entries["gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"] = png(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(UploadRejected, match=r"_labelIds.png' is a RGB image; Cityscapes masks are grey .*"
                                             r"\*_gtFine_labelIds.png files"):
        import_archive(tmp_path, entries, cityscapes("car", other_labels="ignore"))


def test_a_mask_of_another_size_is_refused(tmp_path):
    entries = export(FRAMES)
    entries["gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"] = png(np.zeros((H + 1, W), np.uint8))
    with pytest.raises(UploadRejected, match=r"is 16x13 but its image"):
        import_archive(tmp_path, entries, cityscapes("car", other_labels="ignore"))


def test_format_cityscapes_without_label_ids_masks_is_refused(tmp_path):
    entries = {k: v for k, v in export(FRAMES).items() if not k.endswith("_labelIds.png")}
    with pytest.raises(UploadRejected, match=r"has no \*_gtFine_labelIds.png .*not \*_color.png"):
        import_archive(tmp_path, entries, cityscapes("car"))
