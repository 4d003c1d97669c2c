"""COCO panoptic exports (format "coco_panoptic"), written as panopticapi writes them: a JSON, one
RGB PNG per image whose pixels hold segment ids as R + 256 G + 256^2 B, and the images."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from services.data.upload import UploadRejected
from tests.services.data.formats.helpers import import_archive, jpeg, photo, png

H, W = 12, 16
JSON = "annotations/panoptic_val2017.json"
PNGS = "annotations/panoptic_val2017/"  # the folder named like the JSON, beside it
CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person", "isthing": 1, "color": [220, 20, 60]},
              {"id": 3, "name": "car", "supercategory": "vehicle", "isthing": 1, "color": [0, 0, 142]},
              {"id": 184, "name": "tree-merged", "supercategory": "plant", "isthing": 0, "color": [107, 142, 35]}]
SPEC = {"classes": ["car"], "also_labelled": ["person"], "format": "coco_panoptic"}
# Segment ids past one byte, so that G and B carry part of them.
CAR, PERSON, CROWD, TREE = 300, 70000, 5, 1_000_000


def id_png(ids: np.ndarray) -> bytes:
    """Segment ids as panopticapi's id2rgb writes them: R + 256 G + 256^2 B."""
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)
    return png(rgb)


def scene() -> np.ndarray:
    """Segment ids: a car, a person, a crowd of people, a tree; the rest void (0)."""
    ids = np.zeros((H, W), np.int64)
    ids[0:4, 0:6] = CAR
    ids[6:12, 0:4] = PERSON
    ids[6:12, 6:10] = CROWD
    ids[0:5, 10:16] = TREE
    return ids


def segment(segment_id: int, category_id: int, iscrowd: int = 0) -> dict:
    return {"id": segment_id, "category_id": category_id, "iscrowd": iscrowd, "bbox": [0, 0, 1, 1], "area": 1}


class Export:
    def __init__(self) -> None:
        self.data = {"info": {}, "licenses": [], "categories": copy.deepcopy(CATEGORIES), "images": [],
                     "annotations": []}
        self.files: dict[str, bytes] = {}

    def image(self, stem: str, ids: np.ndarray, segments: list[dict], seed: int = 0, images: str = "val2017/",
              pngs: str = PNGS) -> None:
        image_id = len(self.data["images"]) + 1
        h, w = ids.shape
        self.data["images"].append({"id": image_id, "file_name": f"{stem}.jpg", "width": w, "height": h})
        self.data["annotations"].append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
        self.files[f"{images}{stem}.jpg"] = jpeg(photo(h, w, seed))
        self.files[f"{pngs}{stem}.png"] = id_png(ids)

    def entries(self, json_path: str = JSON) -> dict[str, bytes | str]:
        return {json_path: json.dumps(self.data), **self.files}


def two_images() -> Export:
    export = Export()
    export.image("000000000139", scene(), [segment(CAR, 3), segment(PERSON, 1), segment(CROWD, 1, iscrowd=1),
                                           segment(TREE, 184)])
    ids = np.zeros((H, W), np.int64)
    ids[:, 8:] = CAR
    export.image("000000000285", ids, [segment(CAR, 3)], seed=1)
    return export


def expected(tree: int) -> np.ndarray:
    values = np.full((H, W), 255, np.uint8)  # void
    values[0:4, 0:6] = 1  # car: the spec's new class
    values[6:12, 0:4] = 2  # person: also_labelled
    values[6:12, 6:10] = 2  # the crowd of people: people too
    values[0:5, 10:16] = tree
    return values


def test_segments_become_their_categories_and_void_is_ignored(tmp_path):
    imported = import_archive(tmp_path, two_images().entries(), {**SPEC, "other_labels": "ignore"})
    assert (imported.mask("000000000139") == expected(255)).all()
    second = np.full((H, W), 255, np.uint8)
    second[:, 8:] = 1
    assert (imported.mask("000000000285") == second).all()
    report = imported.report
    assert report["format"] == "coco_panoptic" and report["images"] == 2
    assert report["class_images"] == {"car": 2, "person": 1}
    assert [i["kind"] for i in report["issues"]] == ["unknown_labels"]
    assert imported.issue("unknown_labels")["labels"] == {"tree-merged": 1}
    assert imported.issue("unknown_labels")["pixels"] == 30


def test_unnamed_categories_may_become_background(tmp_path):
    imported = import_archive(tmp_path, two_images().entries(), {**SPEC, "other_labels": "background"})
    assert (imported.mask("000000000139") == expected(0)).all()


def test_unnamed_categories_are_refused_by_default(tmp_path):
    with pytest.raises(UploadRejected, match=r"'tree-merged' \(1 images\)"):
        import_archive(tmp_path, two_images().entries(), SPEC)


def test_a_spec_class_the_categories_do_not_define_is_refused(tmp_path):
    with pytest.raises(UploadRejected, match=r"defines no label 'bus'; its labels are car, person, tree-merged"):
        import_archive(tmp_path, two_images().entries(), {**SPEC, "classes": ["bus"]})


@pytest.mark.parametrize("layout", ["beside", "detectron2", "panoptic"])
def test_the_layout_is_recognised_and_the_pngs_found(tmp_path, layout):
    export = two_images()
    folder = {"beside": PNGS, "detectron2": "panoptic_val2017/", "panoptic": "panoptic/"}[layout]
    entries = {k.replace(PNGS, folder): v for k, v in export.entries().items()}
    imported = import_archive(tmp_path, entries, {"classes": ["car", "person"], "other_labels": "ignore"})
    assert imported.dataset.format == "coco_panoptic"  # asked before COCO instances
    assert (imported.mask("000000000139") == expected(255)).all()


def test_a_segment_id_the_json_does_not_list_is_refused(tmp_path):
    export = two_images()
    export.data["annotations"][0]["segments_info"].pop()  # the tree
    with pytest.raises(UploadRejected, match=rf"'{PNGS}000000000139.png' holds segment ids 1000000, which {JSON}: "
                                             r"annotations\[0\]\.segments_info does not list"):
        import_archive(tmp_path, export.entries(), {**SPEC, "other_labels": "ignore"})


def test_missing_pngs_and_images_are_named(tmp_path):
    entries = two_images().entries()
    del entries[f"{PNGS}000000000285.png"]
    with pytest.raises(UploadRejected, match=r"lists 1 panoptic PNGs the archive does not hold: 000000000285.png"):
        import_archive(tmp_path, entries, {**SPEC, "other_labels": "ignore"})
    entries = two_images().entries()
    del entries["val2017/000000000139.jpg"]
    with pytest.raises(UploadRejected, match=r"lists 1 images the archive does not hold: 000000000139.jpg"):
        import_archive(tmp_path, entries, {**SPEC, "other_labels": "ignore"})


def test_an_image_without_an_annotation_is_skipped_and_reported(tmp_path):
    export = two_images()
    export.data["images"].append({"id": 9, "file_name": "000000000632.jpg", "width": W, "height": H})
    entries = {**export.entries(), "val2017/000000000632.jpg": jpeg(photo())}
    imported = import_archive(tmp_path, entries, {**SPEC, "other_labels": "ignore"})
    assert {i.stem for i in imported.items} == {"000000000139", "000000000285"}
    assert imported.issue("unused_files")["examples"] == ["val2017/000000000632.jpg"]


def test_sizes_that_disagree_are_refused(tmp_path):
    export = two_images()
    export.data["images"][1]["height"] = H + 1
    with pytest.raises(UploadRejected, match=r"images\[1\] says '000000000285.jpg' is 16x13 .* is 16x12"):
        import_archive(tmp_path, export.entries(), {**SPEC, "other_labels": "ignore"})
    export = two_images()
    export.files[f"{PNGS}000000000285.png"] = id_png(np.zeros((H, W + 2), np.int64))
    with pytest.raises(UploadRejected, match=r"mask .*000000000285.png' is 18x12 but its image .* is 16x12"):
        import_archive(tmp_path, export.entries(), {**SPEC, "other_labels": "ignore"})


def changed(data: dict, path: list, value) -> None:
    for key in path[:-1]:
        data = data[key]
    if value is KeyError:
        del data[path[-1]]
    else:
        data[path[-1]] = value


S0 = r"annotations\[0\]\.segments_info\[0\]"
MALFORMED = [
    (["annotations", 0, "segments_info"], {}, r"annotations\[0\]\.segments_info: expected a list"),
    (["annotations", 0, "segments_info", 0, "id"], 0, rf"{S0}\.id: expected an integer of at least 1, got 0"),
    (["annotations", 0, "segments_info", 0, "id"], 256**3, rf"{S0}\.id: 16777216 is more than"),
    (["annotations", 0, "segments_info", 1, "id"], CAR, r"annotations\[0\]\.segments_info\[1\]\.id: segment 300 is "
                                                        r"listed twice"),
    (["annotations", 0, "segments_info", 0, "category_id"], 2, rf"{S0}\.category_id: 2 is not the id of any entry"),
    (["annotations", 0, "segments_info", 0, "iscrowd"], "no", rf"{S0}\.iscrowd: expected 0 or 1"),
    (["annotations", 0, "file_name"], KeyError, r"annotations\[0\]: has no 'file_name'"),
    (["annotations", 1, "image_id"], 1, r"annotations\[1\]\.image_id: 1 is annotated by .*annotations\[0\] already"),
    (["annotations", 1, "image_id"], 7, r"annotations\[1\]\.image_id: 7 is not the id of any entry of images"),
    (["images", 0, "height"], -1, r"images\[0\]\.height: expected an integer of at least 1, got -1"),
    (["categories", 2], [], r"categories\[2\]: expected an object, got \[\]"),
]


@pytest.mark.parametrize(("path", "value", "message"), MALFORMED, ids=[m for _, _, m in MALFORMED])
def test_a_malformed_json_is_refused_naming_the_file_and_field(tmp_path, path, value, message):
    export = two_images()
    changed(export.data, path, value)
    with pytest.raises(UploadRejected, match=f"^{JSON}: {message}"):
        import_archive(tmp_path, export.entries(), {**SPEC, "other_labels": "ignore"})
