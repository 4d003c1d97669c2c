"""COCO instances exports (format "coco"), written as the tools write them: a JSON beside or above
the images, polygons, integer-count and compressed RLEs (encoded with pycocotools), iscrowd."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from services.data.upload import UploadRejected
from tests.services.data.formats.helpers import import_archive, jpeg, photo, png

H, W = 12, 16
JSON = "annotations/instances_default.json"  # CVAT's "COCO 1.0" layout, images/ beside annotations/
CATEGORIES = [{"id": 1, "name": "car", "supercategory": ""}, {"id": 2, "name": "person", "supercategory": ""},
              {"id": 3, "name": "tree", "supercategory": ""}]
SPEC = {"classes": ["car"], "also_labelled": ["person"], "format": "coco"}


# --- writing exports ----------------------------------------------------------------------------------
def box(x0: int, y0: int, x1: int, y1: int, h: int = H, w: int = W) -> np.ndarray:
    """A boolean mask: columns x0..x1-1, rows y0..y1-1."""
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def polygon(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    """The rectangle ``box(x0, y0, x1, y1)`` covers, as a COCO polygon (pycocotools fills x0 <= x < x1)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def compressed(m: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def uncompressed(m: np.ndarray) -> dict:
    """Integer counts: runs of 0s and 1s over the column-major pixels, starting with 0s."""
    flat = m.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    counts = ([0] if flat[0] else []) + runs
    rle = {"size": [m.shape[0], m.shape[1]], "counts": counts}
    assert (coco_mask.decode(coco_mask.frPyObjects(rle, *m.shape)) == m).all()  # as pycocotools reads it
    return rle


def image(image_id: int, file_name: str, h: int = H, w: int = W) -> dict:
    return {"id": image_id, "file_name": file_name, "width": w, "height": h}


class Export:
    """A COCO instances JSON being written, with its images."""

    def __init__(self, categories: list[dict] | None = None) -> None:
        self.data = {"info": {}, "licenses": [], "categories": copy.deepcopy(categories or CATEGORIES), "images": [],
                     "annotations": []}
        self.files: dict[str, bytes] = {}

    def image(self, file_name: str, h: int = H, w: int = W, seed: int = 0, folder: str = "images/") -> int:
        image_id = len(self.data["images"]) + 1
        self.data["images"].append(image(image_id, file_name, h, w))
        pixels = photo(h, w, seed)
        self.files[folder + file_name] = jpeg(pixels) if file_name.endswith(".jpg") else png(pixels)
        return image_id

    def annotate(self, image_id: int, category_id: int, segmentation, iscrowd: int = 0) -> None:
        self.data["annotations"].append({"id": len(self.data["annotations"]) + 1, "image_id": image_id,
                                         "category_id": category_id, "segmentation": segmentation,
                                         "iscrowd": iscrowd, "bbox": [0, 0, 1, 1], "area": 1})

    def entries(self, json_path: str = JSON) -> dict[str, bytes | str]:
        return {json_path: json.dumps(self.data), **self.files}


def two_images() -> Export:
    """a.jpg: a car polygon and a person as integer counts; b.png: a car as a compressed RLE."""
    export = Export()
    a, b = export.image("a.jpg"), export.image("b.png", seed=1)
    export.annotate(a, 1, polygon(1, 2, 5, 6))
    export.annotate(a, 2, uncompressed(box(8, 0, 12, 3)), iscrowd=1)
    export.annotate(b, 1, compressed(box(0, 9, 16, 12)))
    return export


# --- geometry -----------------------------------------------------------------------------------------
def test_polygons_and_both_rle_forms_become_one_semantic_mask_each(tmp_path):
    imported = import_archive(tmp_path, two_images().entries(), SPEC)
    expected_a = np.zeros((H, W), np.uint8)
    expected_a[box(1, 2, 5, 6)] = 1  # car: the spec's first new class
    expected_a[box(8, 0, 12, 3)] = 2  # person: also_labelled, after the new classes
    expected_b = np.where(box(0, 9, 16, 12), 1, 0).astype(np.uint8)
    assert (imported.mask("a") == expected_a).all()
    assert (imported.mask("b") == expected_b).all()
    report = imported.report
    assert report["format"] == "coco" and report["images"] == 2
    assert report["class_images"] == {"car": 2, "person": 1}
    assert report["issues"] == []


def test_a_polygon_of_fewer_than_three_points_covers_nothing(tmp_path):
    export = Export()
    a = export.image("a.jpg")
    export.annotate(a, 1, [[1, 1, 5, 5], *polygon(0, 0, 2, 2)])  # four numbers: not a box, a 2-point line
    imported = import_archive(tmp_path, export.entries(), SPEC)
    assert (imported.mask("a") == np.where(box(0, 0, 2, 2), 1, 0)).all()


def test_an_image_without_annotations_is_all_background(tmp_path):
    export = two_images()
    export.image("c.jpg", seed=2)
    imported = import_archive(tmp_path, export.entries(), SPEC)
    assert (imported.mask("c") == 0).all()
    assert imported.issue("empty_masks")["examples"] == ["c"]


# --- the overlap rule -----------------------------------------------------------------------------------
def test_a_smaller_instance_keeps_the_pixels_it_shares_with_a_larger_one(tmp_path):
    export = Export()
    a = export.image("a.jpg")
    export.annotate(a, 2, polygon(4, 4, 8, 8))  # a person in front of ...
    export.annotate(a, 1, polygon(0, 0, 12, 10))  # ... a larger car, listed after it
    imported = import_archive(tmp_path, export.entries(), SPEC)
    expected = np.where(box(0, 0, 12, 10), 1, 0)
    expected[box(4, 4, 8, 8)] = 2
    assert (imported.mask("a") == expected).all()
    issue = imported.issue("overlaps_resolved")
    assert issue["count"] == 1 and issue["examples"] == ["a"] and issue["pixels"] == 16


def test_crowd_regions_are_painted_first_so_any_instance_covers_them(tmp_path):
    export = Export()
    a = export.image("a.jpg")
    export.annotate(a, 1, polygon(2, 2, 6, 6))  # a car, larger than ...
    export.annotate(a, 2, uncompressed(box(4, 4, 6, 6)), iscrowd=1)  # ... a crowd of people it overlaps
    imported = import_archive(tmp_path, export.entries(), SPEC)
    assert (imported.mask("a") == np.where(box(2, 2, 6, 6), 1, 0)).all()
    assert imported.issue("overlaps_resolved")["pixels"] == 4


def test_instances_of_one_class_overlapping_are_not_an_overlap_to_report(tmp_path):
    export = Export()
    a = export.image("a.jpg")
    export.annotate(a, 1, polygon(0, 0, 6, 6))
    export.annotate(a, 1, compressed(box(3, 3, 9, 9)))
    imported = import_archive(tmp_path, export.entries(), SPEC)
    assert (imported.mask("a") == np.where(box(0, 0, 6, 6) | box(3, 3, 9, 9), 1, 0)).all()
    assert imported.issue("overlaps_resolved") is None


# --- names ----------------------------------------------------------------------------------------------
def tree_export() -> Export:
    export = Export()
    a = export.image("a.jpg")
    export.annotate(a, 1, polygon(0, 0, 4, 4))
    export.annotate(a, 3, polygon(10, 6, 16, 12))  # a tree: a category the spec does not name
    return export


@pytest.mark.parametrize(("policy", "value"), [("ignore", 255), ("background", 0)])
def test_categories_the_spec_does_not_name_follow_other_labels(tmp_path, policy, value):
    imported = import_archive(tmp_path, tree_export().entries(), {**SPEC, "other_labels": policy})
    expected = np.where(box(0, 0, 4, 4), 1, 0)
    expected[box(10, 6, 16, 12)] = value
    assert (imported.mask("a") == expected).all()
    issue = imported.issue("unknown_labels")
    assert issue["labels"] == {"tree": 1} and issue["pixels"] == 36


def test_categories_the_spec_does_not_name_are_refused_by_default(tmp_path):
    with pytest.raises(UploadRejected, match=r"'tree' \(1 images\).*other_labels"):
        import_archive(tmp_path, tree_export().entries(), SPEC)


def test_a_category_is_matched_by_name_not_by_id(tmp_path):
    export = Export([{"id": 7, "name": "person"}, {"id": 3, "name": "car"}])
    a = export.image("a.jpg")
    export.annotate(a, 3, polygon(0, 0, 2, 2))
    export.annotate(a, 7, polygon(4, 4, 6, 6))
    mask = import_archive(tmp_path, export.entries(), SPEC).mask("a")
    assert mask[0, 0] == 1 and mask[4, 4] == 2


def test_a_spec_class_the_categories_do_not_define_is_refused(tmp_path):
    with pytest.raises(UploadRejected, match=r"classes: .* defines no label 'bus'; its labels are car, person, tree"):
        import_archive(tmp_path, two_images().entries(), {**SPEC, "classes": ["bus"]})


# --- files ----------------------------------------------------------------------------------------------
def test_missing_images_are_named(tmp_path):
    entries = two_images().entries()
    del entries["images/b.png"]
    with pytest.raises(UploadRejected, match=r"lists 1 images the archive does not hold: b.png; .*Save images"):
        import_archive(tmp_path, entries, SPEC)


def test_images_no_entry_names_are_reported_unused(tmp_path):
    entries = {**two_images().entries(), "images/extra.jpg": jpeg(photo())}
    imported = import_archive(tmp_path, entries, SPEC)
    assert {i.stem for i in imported.items} == {"a", "b"}
    assert imported.issue("unused_files")["examples"] == ["images/extra.jpg"]


def test_an_image_of_another_size_than_its_entry_says_is_refused(tmp_path):
    export = two_images()
    export.files["images/b.png"] = png(photo(H, W + 1))
    with pytest.raises(UploadRejected, match=r"images\[1\] says 'b.png' is 16x12 .* image 'images/b.png' is 17x12"):
        import_archive(tmp_path, export.entries(), SPEC)


@pytest.mark.parametrize("layout", ["roboflow", "root", "coco"])
def test_layouts_are_recognised_and_their_images_found(tmp_path, layout):
    export = two_images()
    if layout == "roboflow":  # train/_annotations.coco.json beside its images, in a wrapper folder
        entries = {"project/train/_annotations.coco.json": json.dumps(export.data),
                   **{f"project/train/{k[len('images/'):]}": v for k, v in export.files.items()}}
    elif layout == "root":
        entries = export.entries("annotations.json")
    else:  # COCO's own: annotations/instances_val2017.json + val2017/
        entries = {"annotations/instances_val2017.json": json.dumps(export.data),
                   **{f"val2017/{k[len('images/'):]}": v for k, v in export.files.items()}}
    imported = import_archive(tmp_path, entries, {k: v for k, v in SPEC.items() if k != "format"})
    assert imported.dataset.format == "coco"
    assert imported.mask("a")[2, 1] == 1 and imported.mask("b")[11, 0] == 1


def test_other_json_files_of_the_archive_are_left_alone(tmp_path):
    entries = {**two_images().entries(), "meta/notes.json": "not JSON at all", "meta/list.json": "[1, 2]",
               "meta/polygons.json": json.dumps({"imgHeight": 12, "objects": []})}
    imported = import_archive(tmp_path, entries, {k: v for k, v in SPEC.items() if k != "format"})
    assert imported.dataset.format == "coco" and len(imported.items) == 2


def test_every_annotation_file_is_read_with_its_images(tmp_path):
    train, val = two_images(), Export()
    c = val.image("c.jpg", seed=3, folder="images/val/")
    val.annotate(c, 2, polygon(0, 0, 3, 3))
    entries = {"annotations/instances_train.json": json.dumps(train.data),
               **{k.replace("images/", "images/train/"): v for k, v in train.files.items()},
               "annotations/instances_val.json": json.dumps(val.data), **val.files}
    imported = import_archive(tmp_path, entries, SPEC)
    assert {i.stem for i in imported.items} == {"a", "b", "c"}
    assert imported.mask("c")[0, 0] == 2


def test_an_image_two_annotation_files_annotate_is_refused(tmp_path):
    export = two_images()
    entries = {**export.entries("annotations/instances_train.json"),
               "annotations/instances_val.json": json.dumps(export.data)}
    with pytest.raises(UploadRejected, match=r"'images/a.jpg' is annotated twice, by annotations/instances_train"):
        import_archive(tmp_path, entries, SPEC)


def test_a_detection_export_is_refused_as_boxes_only(tmp_path):
    export = two_images()
    for a in export.data["annotations"]:
        del a["segmentation"]
    with pytest.raises(UploadRejected, match="holds boxes only"):
        import_archive(tmp_path, export.entries(), SPEC)


# --- malformed JSON ---------------------------------------------------------------------------------------
def changed(data: dict, path: list, value) -> None:
    """``data`` with the field at ``path`` set to ``value`` (deleted for KeyError)."""
    for key in path[:-1]:
        data = data[key]
    if value is KeyError:
        del data[path[-1]]
    else:
        data[path[-1]] = value


A0, A1, A2 = (rf"annotations\[{i}\] \(id {i + 1}\)" for i in range(3))  # a.jpg's polygon and RLE, b.png's RLE
OVERRUN = compressed(box(0, 0, 20, 20, h=24, w=32))["counts"]  # runs for 24 x 32 pixels
MALFORMED = [
    (["annotations", 0, "segmentation"], "x", rf"{A0}\.segmentation: expected polygons"),
    (["annotations", 0, "segmentation"], [], rf"{A0}\.segmentation: is empty: .* box only"),
    (["annotations", 0, "segmentation"], [[1, 2, 3]], rf"{A0}\.segmentation\[0\]: has 3 numbers"),
    (["annotations", 0, "segmentation"], [[1, 2, "3", 4, 5, 6]], rf"{A0}\.segmentation\[0\]: expected a polygon"),
    (["annotations", 0, "segmentation"], [[0, 0, 1e9, 0, 5, 5]],
     rf"{A0}\.segmentation\[0\]: point \(1000000000.0, 0\) lies far outside the 16x12 image"),
    (["annotations", 1, "segmentation", "size"], [16, 12],
     rf"{A1}\.segmentation\.size: \[16, 12\] is not the image's \[height, width\], \[12, 16\]"),
    (["annotations", 1, "segmentation", "counts"], [5, 7], rf"{A1}\.segmentation\.counts: the runs add up to 12 "),
    (["annotations", 1, "segmentation", "counts"], [5, -1], rf"{A1}\.segmentation\.counts: expected a compressed"),
    (["annotations", 2, "segmentation", "counts"], "ab~", rf"{A2}\.segmentation\.counts: not a compressed RLE"),
    (["annotations", 2, "segmentation", "counts"], OVERRUN, rf"{A2}\.segmentation\.counts: not a valid RLE"),
    (["annotations", 2, "segmentation"], {"counts": "0"}, rf"{A2}\.segmentation: has no 'size'"),
    (["annotations", 0, "category_id"], 9, rf"{A0}\.category_id: 9 is not the id of any entry of categories"),
    (["annotations", 0, "image_id"], 9, rf"{A0}\.image_id: 9 is not the id of any entry of images"),
    (["annotations", 0, "category_id"], KeyError, rf"{A0}: has no 'category_id'"),
    (["annotations", 0, "iscrowd"], 2, rf"{A0}\.iscrowd: expected 0 or 1"),
    (["annotations", 0], "x", r"annotations\[0\]: expected an object"),
    (["images", 1, "width"], "16", r"images\[1\]\.width: expected an integer of at least 1, got '16'"),
    (["images", 1, "id"], 1, rf"images\[1\]\.id: 1 is also the id of {JSON}: images\[0\]"),
    (["images", 1, "file_name"], KeyError, r"images\[1\]: has no 'file_name'"),
    (["categories", 0, "name"], KeyError, r"categories\[0\]: has no 'name'"),
    (["categories", 1, "id"], 1, r"categories\[1\]\.id: 1 is also the id of category 'car'"),
]


@pytest.mark.parametrize(("path", "value", "message"), MALFORMED, ids=[m for _, _, m in MALFORMED])
def test_a_malformed_json_is_refused_naming_the_file_and_field(tmp_path, path, value, message):
    export = two_images()
    changed(export.data, path, value)
    with pytest.raises(UploadRejected, match=f"^{JSON}: {message}"):
        import_archive(tmp_path, export.entries(), SPEC)


def test_a_json_that_does_not_parse_is_refused(tmp_path):
    entries = {**two_images().entries(), JSON: '{"images": [], "annotations": [], "categories": ['}
    with pytest.raises(UploadRejected, match=f"'{JSON}' is not valid JSON"):
        import_archive(tmp_path, entries, SPEC)
