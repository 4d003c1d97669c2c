"""Label Studio JSON exports of brush (and polygon) regions, zipped with their images; the brush RLE
written by label-studio-sdk's own encoder, so our decoder is checked against the tool's code."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, encode_rle

from services.data.formats import label_studio_rle
from services.data.formats.label_studio_rle import RleError, decode, decode_alpha
from services.data.upload import UploadRejected
from tests.services.data.formats.helpers import import_archive, jpeg, photo, png

H, W = 12, 16
STREET = "/data/upload/1/6f1d2a3b-street.jpg"


def rect(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[top:bottom, left:right] = True
    return mask


def brush(mask: np.ndarray, colour: tuple[int, int, int] | None = None) -> list[int]:
    """A region's RLE as Label Studio writes it: RGBA pixels, each channel the alpha (its current
    exporter), or the label's colour with full alpha (its legacy one)."""
    alpha = mask.astype(np.uint8) * 255
    rgba = np.repeat(alpha[..., None], 4, axis=2)
    if colour is not None:
        rgba[mask, :3] = colour
    return [int(b) for b in encode_rle(rgba.ravel())]


def result(label: str, mask: np.ndarray, rid: str, *, kind: str = "brushlabels", colour=None, size=(W, H)) -> dict:
    return {"original_width": size[0], "original_height": size[1], "image_rotation": 0,
            "value": {"format": "rle", "rle": brush(mask, colour), kind: [label]},
            "id": rid, "from_name": "tag", "to_name": "image", "type": kind, "origin": "manual"}


def polygon(label: str, points: list[list[float]], rid: str) -> dict:
    return {"original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"points": points, "closed": True, "polygonlabels": [label]},
            "id": rid, "from_name": "poly", "to_name": "image", "type": "polygonlabels", "origin": "manual"}


def annotation(aid: int, results: list[dict], *, task: int, updated: str = "2024-05-02T09:15:21.004321Z",
               cancelled: bool = False, ground_truth: bool = False) -> dict:
    return {"id": aid, "completed_by": 1, "result": results, "was_cancelled": cancelled,
            "ground_truth": ground_truth, "created_at": "2024-05-02T09:14:03.512345Z", "updated_at": updated,
            "draft_created_at": None, "lead_time": 12.3, "prediction": {}, "result_count": len(results),
            "unique_id": f"a1b2c3d4-0000-4000-8000-{aid:012d}", "import_id": None, "last_action": None,
            "task": task, "project": 1, "updated_by": 1, "parent_prediction": None, "parent_annotation": None,
            "last_created_by": None}


def task(tid: int, image: str, annotations: list[dict]) -> dict:
    return {"id": tid, "annotations": annotations, "file_upload": image.rsplit("/", 1)[-1], "drafts": [],
            "predictions": [], "data": {"image": image}, "meta": {}, "created_at": "2024-05-02T09:10:00.000000Z",
            "updated_at": "2024-05-02T09:15:21.004321Z", "inner_id": tid, "total_annotations": len(annotations),
            "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": 1, "updated_by": 1, "comment_authors": []}


CAR, PERSON = rect(2, 3, 6, 9), rect(0, 12, H, 13)


def street(results: list[dict] | None = None) -> dict:
    """Task 1: street.jpg (uploaded: the export names it with Label Studio's prefix), a car and a person."""
    results = results if results is not None else [result("car", CAR, "aB3xK9"), result("person", PERSON, "Qw7pZ1")]
    return task(1, STREET, [annotation(11, results, task=1)])


def archive(tasks: list[dict], images: dict[str, bytes] | None = None, name: str = "export.json") -> dict:
    """The export's JSON zipped with its images, as a user would (here in a folder of their own)."""
    images = images if images is not None else {"photos/street.jpg": jpeg(photo(H, W))}
    return {f"project-1-at-2024-05-02-09-20-4f2a/{name}": json.dumps(tasks), **images}


# --- reading ------------------------------------------------------------------------------------
def test_brush_regions_become_exact_masks_by_name(tmp_path):
    # The spec lists person before car: values follow the spec, not the export's order.
    got = import_archive(tmp_path, archive([street()]), {"classes": ["person", "car"]})
    assert got.dataset.format == "label_studio"  # recognised from the JSON's shape
    expected = np.zeros((H, W), np.uint8)
    expected[CAR], expected[PERSON] = 2, 1
    assert np.array_equal(got.mask("street"), expected)  # found without the upload prefix, stored as street
    assert got.report["images"] == 1 and got.report["class_images"] == {"person": 1, "car": 1}
    assert got.report["issues"] == []


def test_legacy_colour_regions_and_soft_edges_use_the_alpha(tmp_path):
    # Label Studio's legacy exporter wrote the label's colour (RGB differ: literal chunks in the
    # RLE); a soft edge has a low alpha and is still the region's, as Label Studio draws it.
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[CAR] = (250, 20, 10, 255)
    rgba[1, 3:9] = (250, 20, 10, 7)
    soft = {**result("car", CAR, "c1"), "value": {"format": "rle", "rle": encode_rle(rgba.ravel()),
                                                   "brushlabels": ["car"]}}
    got = import_archive(tmp_path, archive([street([soft, result("person", PERSON, "p1", colour=(0, 0, 255))])]),
                         {"classes": ["car", "person"]})
    mask = got.mask("street")
    assert (mask[CAR] == 1).all() and (mask[1, 3:9] == 1).all() and (mask[PERSON] == 2).all()
    assert np.count_nonzero(mask) == CAR.sum() + 6 + PERSON.sum()


def test_several_regions_of_several_labels_merge_into_one_mask(tmp_path):
    road, wheel = rect(8, 0, H, W), rect(5, 3, 6, 5)
    results = [result("road", road, "r1"), result("car", CAR, "c1"), result("car", wheel, "c2"),
               result("person", PERSON, "p1")]
    got = import_archive(tmp_path, archive([street(results)]), {"classes": ["car"], "also_labelled": ["road",
                                                                                                      "person"]})
    expected = np.zeros((H, W), np.uint8)
    expected[road], expected[CAR], expected[PERSON] = 2, 1, 3
    assert np.array_equal(got.mask("street"), expected)
    # Road and person overlap (person is later and wins); the two car regions overlap nothing else.
    overlaps = got.issue("overlaps_resolved")
    assert (overlaps["count"], overlaps["examples"], overlaps["pixels"]) == (1, ["street"], 4)


def test_overlaps_go_to_the_later_result_and_are_counted(tmp_path):
    big, small = rect(0, 0, 8, 8), rect(2, 2, 4, 4)
    spec = {"classes": ["car", "person"]}
    on_top = import_archive(tmp_path / "a", archive([street([result("car", big, "c"), result("person", small, "p")])]),
                            spec)
    assert (on_top.mask("street")[small] == 2).all() and on_top.mask("street")[big].sum() == 60 + 4 * 2
    assert on_top.issue("overlaps_resolved")["pixels"] == 4
    below = import_archive(tmp_path / "b", archive([street([result("person", small, "p"), result("car", big, "c")])]),
                           spec)
    assert (below.mask("street")[big] == 1).all() and below.issue("overlaps_resolved")["pixels"] == 4
    # Two regions of one label overlapping are no conflict.
    same = import_archive(tmp_path / "c", archive([street([result("car", big, "c"), result("car", small, "d")])]),
                          {"classes": ["car"]})
    assert same.issue("overlaps_resolved") is None


@pytest.mark.parametrize("policy, value", [("ignore", 255), ("background", 0)])
def test_labels_the_spec_does_not_name_follow_other_labels(tmp_path, policy, value):
    got = import_archive(tmp_path, archive([street()]), {"classes": ["car"], "other_labels": policy})
    mask = got.mask("street")
    assert (mask[PERSON] == value).all() and (mask[CAR] == 1).all()
    assert got.issue("unknown_labels") | {"message": ""} == {"kind": "unknown_labels", "message": "", "count": 1,
                                                             "examples": ["street"], "labels": {"person": 1},
                                                             "pixels": H}


def test_labels_the_spec_does_not_name_are_rejected_by_default(tmp_path):
    with pytest.raises(UploadRejected, match=r"label_studio export labels pixels with 'person' \(1 images\)"):
        import_archive(tmp_path, archive([street()]), {"classes": ["car"]})


def test_a_spec_class_the_export_never_uses_is_refused(tmp_path):
    with pytest.raises(UploadRejected, match=r"classes: the Label Studio export defines no label 'bus'; its labels "
                                             r"are car, person"):
        import_archive(tmp_path, archive([street()]), {"classes": ["bus"]})


def test_polygons_are_rasterised_from_percent_points(tmp_path):
    # x from 25% to 75% of 16 px = columns 4..11, y from 50% to 100% of 12 px = rows 6..11.
    poly = polygon("car", [[25, 50], [75, 50], [75, 100], [25, 100]], "g1")
    got = import_archive(tmp_path, archive([street([poly])]), {"classes": ["car"]})
    assert np.array_equal(got.mask("street"), rect(6, 4, 12, 12).astype(np.uint8))


# --- annotations --------------------------------------------------------------------------------
def test_cancelled_annotations_are_skipped_and_ground_truth_or_the_latest_is_read(tmp_path):
    car, person = [result("car", CAR, "c")], [result("person", PERSON, "p")]
    images = {f"{n}.png": png(photo(H, W, seed=i)) for i, n in enumerate(("a", "b", "c"))}
    tasks = [
        # the latest annotation was cancelled: the earlier one is read
        task(1, "/data/upload/1/0a1b2c3d-a.png", [annotation(1, car, task=1, updated="2024-05-01T00:00:00Z"),
                                                   annotation(2, person, task=1, cancelled=True)]),
        # the ground truth wins over a later one
        task(2, "/data/upload/1/0a1b2c3e-b.png", [annotation(3, car, task=2, ground_truth=True,
                                                              updated="2024-05-01T00:00:00Z"),
                                                   annotation(4, person, task=2)]),
        # without ground truth: the most recently updated
        task(3, "/data/upload/1/0a1b2c3f-c.png", [annotation(6, car, task=3, updated="2024-05-01T00:00:00Z"),
                                                   annotation(5, person, task=3, updated="2024-05-03T00:00:00Z")]),
    ]
    got = import_archive(tmp_path, archive(tasks, images), {"classes": ["car", "person"]})
    assert [got.mask(s).max() for s in ("a", "b", "c")] == [1, 1, 2]


def test_tasks_without_an_annotation_are_skipped_and_their_images_reported(tmp_path):
    images = {"street.jpg": jpeg(photo(H, W)), "empty.jpg": jpeg(photo(H, W, 1)), "boxes.jpg": jpeg(photo(H, W, 2)),
              "cancelled.jpg": jpeg(photo(H, W, 3)), "blank.jpg": jpeg(photo(H, W, 4))}
    box = {"original_width": W, "original_height": H, "id": "b1", "from_name": "box", "to_name": "image",
           "type": "rectanglelabels", "value": {"x": 10, "y": 10, "width": 20, "height": 20,
                                                "rectanglelabels": ["car"]}}
    tasks = [street(), task(2, "/data/upload/1/11111111-empty.jpg", []),
             task(3, "/data/upload/1/22222222-boxes.jpg", [annotation(3, [box], task=3)]),
             task(4, "/data/upload/1/33333333-cancelled.jpg", [annotation(4, [], task=4, cancelled=True)]),
             task(5, "/data/upload/1/44444444-gone.jpg", []),  # no annotation: its image need not be sent
             # submitted without a region: the image shows none of the labels (background)
             task(6, "/data/upload/1/55555555-blank.jpg", [annotation(6, [], task=6)])]
    got = import_archive(tmp_path, archive(tasks, images), {"classes": ["car", "person"]})
    assert [i.stem for i in got.items] == ["blank", "street"] and not got.mask("blank").any()
    assert sorted(got.issue("unused_files")["examples"]) == ["boxes.jpg", "cancelled.jpg", "empty.jpg"]
    assert got.issue("empty_masks")["examples"] == ["blank"]


# --- images ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reference, stored", [
    ("/data/upload/1/6f1d2a3b-street%20view.jpg", "street view.jpg"),  # URL-decoded, prefix stripped
    ("/data/upload/1/6f1d2a3b-street%20view.jpg", "ls/media/upload/1/6f1d2a3b-street view.jpg"),  # as stored by LS
    ("https://cdn.example.com/set/street%20view.jpg?X-Amz-Signature=abc", "set/street view.jpg"),
    ("s3://bucket/set/street view.jpg", "any/where/street view.jpg"),
    ("/data/local-files/?d=set%2Fstreet%20view.jpg", "set/street view.jpg"),
])
def test_images_are_found_by_their_reference(tmp_path, reference, stored):
    tasks = [task(1, reference, [annotation(1, [result("car", CAR, "c")], task=1)])]
    got = import_archive(tmp_path, archive(tasks, {stored: jpeg(photo(H, W)), "other.jpg": jpeg(photo(H, W))}),
                         {"classes": ["car"]})
    assert got.items[0].image.name.endswith(stored.rsplit("/", 1)[-1])
    assert got.issue("unused_files")["examples"] == ["other.jpg"]


def test_a_missing_image_is_named(tmp_path):
    with pytest.raises(UploadRejected, match=r"export.json: task 1, annotation 11: its image "
                                             r"'/data/upload/1/6f1d2a3b-street.jpg' is not in the archive \(looked "
                                             r"for a file named '6f1d2a3b-street.jpg' or 'street.jpg'\)"):
        import_archive(tmp_path, archive([street()], {"photos/road.jpg": jpeg(photo(H, W))}), {"classes": ["car"]})


def test_an_ambiguous_image_is_refused(tmp_path):
    images = {"a/street.jpg": jpeg(photo(H, W)), "b/street.jpg": jpeg(photo(H, W))}
    with pytest.raises(UploadRejected, match=r"several files could be its image .*a/street.jpg, b/street.jpg"):
        import_archive(tmp_path, archive([street()], images), {"classes": ["car"]})


def test_a_region_drawn_on_another_size_is_refused(tmp_path):
    wrong = result("car", np.zeros((H, 2 * W), bool), "big1", size=(2 * W, H))
    with pytest.raises(UploadRejected, match=r"task 1, annotation 11, result 'big1': the region is drawn on a 32x12 "
                                             r"image .* but '.*street.jpg' is 16x12"):
        import_archive(tmp_path, archive([street([result("car", CAR, "c"), wrong])]), {"classes": ["car"]})


# --- bad exports --------------------------------------------------------------------------------
def with_rle(rle) -> dict:
    bad = result("car", CAR, "r9")
    bad["value"]["rle"] = rle
    return street([result("person", PERSON, "p"), bad])


GOOD = brush(CAR)


@pytest.mark.parametrize("rle, message", [
    (GOOD[:len(GOOD) // 2], r"runs past the end of the data|ends after"),
    (GOOD[:5], r"shorter than the format's header"),
    (brush(np.zeros((H, W - 1), bool)), rf"declares {H * (W - 1) * 4} values but the image's RGBA pixels are "
                                        rf"{H * W * 4}"),
    ([255] * 40, r"declares 4294967295 values"),  # never allocated
    (GOOD[:-1] + [256], r"byte values \(integers 0..255\), not 256"),
    ([1.5, 2], r"not 1.5"),
    ([], r"non-empty list"),
])
def test_hostile_brush_rle_is_refused_naming_the_region(tmp_path, rle, message):
    with pytest.raises(UploadRejected, match=r"export.json: task 1, annotation 11, result 'r9': "
                                             r"the brush RLE is not valid: .*(" + message + ")"):
        import_archive(tmp_path, archive([with_rle(rle)]), {"classes": ["car", "person"]})


@pytest.mark.parametrize("change, message", [
    (lambda r: r["value"].update(brushlabels=["car", "bus"]), r"exactly one label, not \['car', 'bus'\]"),
    (lambda r: r["value"].update(brushlabels=[]), r"exactly one label"),
    (lambda r: r.update(original_width="16"), r"original_width and original_height must be positive integers"),
    (lambda r: r["value"].update(format="png"), r'needs "format": "rle"'),
    (lambda r: r["value"].update(rle="abc"), r'needs "format": "rle" and its "rle" list'),
    (lambda r: r.update(value=None), r'has no "value" object'),
])
def test_malformed_regions_are_refused_naming_them(tmp_path, change, message):
    bad = result("car", CAR, "r9")
    change(bad)
    with pytest.raises(UploadRejected, match=r"task 1, annotation 11, result 'r9': .*" + message):
        import_archive(tmp_path, archive([street([bad])]), {"classes": ["car"]})


def test_a_malformed_polygon_is_refused(tmp_path):
    poly = polygon("car", [[25, 50], [75, float("nan")], [75, 100]], "g1")
    doc = json.dumps([street([poly])])  # NaN is what Python writes; Label Studio would not
    with pytest.raises(UploadRejected, match=r"result 'g1': a polygon needs \"points\": at least 3"):
        import_archive(tmp_path, {"export.json": doc, "street.jpg": jpeg(photo(H, W))}, {"classes": ["car"]})


def test_json_min_is_refused_saying_why(tmp_path):
    minimal = [{"image": STREET, "id": 1, "tag": [{"format": "rle", "brushlabels": ["car"], "original_width": W,
                                                   "original_height": H}],
                "annotator": 1, "annotation_id": 11, "created_at": "2024-05-02T09:14:03.512345Z",
                "updated_at": "2024-05-02T09:15:21.004321Z", "lead_time": 12.3}]
    with pytest.raises(UploadRejected, match=r"JSON-MIN export, which leaves out the brush masks.*export the project "
                                             r"as \"JSON\""):
        import_archive(tmp_path, archive(minimal), {"classes": ["car"]})
    with pytest.raises(UploadRejected, match=r"JSON-MIN"):  # named explicitly, too
        import_archive(tmp_path / "b", archive(minimal), {"classes": ["car"], "format": "label_studio"})


def test_two_tasks_on_one_image_are_refused(tmp_path):
    second = copy.deepcopy(street())
    second["id"] = 2
    with pytest.raises(UploadRejected, match=r"task 1, annotation 11 and .*task 2, annotation 11 both refer to the "
                                             r"image 'photos/street.jpg'"):
        import_archive(tmp_path, archive([street(), second]), {"classes": ["car", "person"]})


def test_an_archive_without_the_export_is_refused_when_named(tmp_path):
    with pytest.raises(UploadRejected, match=r"the Label Studio export is missing.*Export -> JSON"):
        import_archive(tmp_path, {"street.jpg": jpeg(photo(H, W)), "notes.json": "{}"},
                       {"classes": ["car"], "format": "label_studio"})


# --- the decoder against label-studio-sdk's -----------------------------------------------------------
@pytest.mark.parametrize("block", [1 << 20, 7])  # 7: values expanded in many small blocks
@pytest.mark.parametrize("seed", range(6))
def test_the_decoder_agrees_with_label_studio_sdk(seed, block, monkeypatch):
    monkeypatch.setattr(label_studio_rle, "_BLOCK_WORDS", block)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300)) * 4
    values = [rng.integers(0, 256, n),  # noise: literal chunks
              np.repeat(rng.integers(0, 2, n // 4) * 255, 4),  # a mask: runs of 4 and more
              np.repeat(rng.integers(0, 256, 5), [n - 4 * (n // 5)] + [n // 5] * 4)][seed % 3].astype(np.uint8)
    if seed == 5:  # runs longer than the largest count field (2^16): split in several chunks
        values = np.zeros(70_000 * 4, np.uint8)
        values[1000:] = 9
    rle = bytes(encode_rle(values))
    assert np.array_equal(decode(rle, len(values)), values)
    assert np.array_equal(decode(rle, len(values)), decode_rle(rle))
    # The importer's alpha-only path: as label-studio-sdk's converters read a region.
    sdk_alpha = decode_rle(rle).reshape(1, len(values) // 4, 4)[..., 3] != 0
    assert np.array_equal(decode_alpha(rle, len(values) // 4, 1), sdk_alpha)


def bits(*fields: tuple[int, int]) -> bytes:
    """Bytes of big-endian (value, width) bit fields, zero-padded to whole bytes."""
    text = "".join(f"{value:0{width}b}" for value, width in fields)
    text += "0" * (-len(text) % 8)
    return bytes(int(text[i:i + 8], 2) for i in range(0, len(text), 8))


def test_the_decoder_reads_other_word_and_count_sizes_as_the_format_defines():
    # 12-bit words, count fields of 2, 5, 1 and 16 bits: a run of 3 x 4000, then literals 7, 4095.
    header = [(5, 32), (11, 5), (1, 4), (4, 4), (0, 4), (15, 4)]
    rle = bits(*header, (1, 1), (0, 2), (2, 2), (4000, 12), (0, 1), (2, 2), (1, 1), (7, 12), (4095, 12))
    assert decode(rle, 5).tolist() == [4000, 4000, 4000, 7, 4095]
    with pytest.raises(RleError, match=r"more values than its header declares \(4\)"):
        decode(bits((4, 32), *header[1:], (1, 1), (3, 2), (4, 16), (0, 12)), 4)


def test_polygon_points_outside_the_image_go_to_its_edge(tmp_path):
    # Coordinates like these crash pycocotools' rasteriser if they reach it.
    poly = polygon("car", [[-1e12, -1e12], [1e300, -5], [1e12, 50], [-3, 50]], "g1")
    got = import_archive(tmp_path, archive([street([poly])]), {"classes": ["car"]})
    assert np.array_equal(got.mask("street"), rect(0, 0, 6, W).astype(np.uint8))
