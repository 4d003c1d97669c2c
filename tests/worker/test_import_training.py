"""The issue's "done when": annotation tools' exports, posted as they come out of the tool, train
versions. A CVAT "Segmentation mask 1.1" zip trains a model's first version; a COCO instances
export (annotations/instances_default.json + images/, as CVAT's "COCO 1.0" writes it, RLE and
polygons) adds a class on top of it. Classes are matched by name, in an order that differs from the
exports' own, through a real worker process."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from services.data.synthetic import SHAPES, write_shapes_dataset
from tests.worker.test_training_flow import SMALL, create_model, segment, submit, wait_task

COLOURS = {"background": (0, 0, 0), "square": (128, 0, 0), "disc": (0, 128, 0), "triangle": (128, 128, 0)}


def shapes(tmp: Path, name: str, count: int, shown: list[int], seed: int) -> list[tuple[str, bytes, np.ndarray]]:
    """(stem, PNG image, mask of shape indices) of synthetic images drawing ``shown``."""
    root = write_shapes_dataset(tmp / name, {"train": count}, size=32, num_shapes=3,
                                compositions={"train": [shown]}, seed=seed)
    return [(p.stem, p.read_bytes(), np.asarray(Image.open(root / "train" / "masks" / p.name)))
            for p in sorted((root / "train" / "images").iterdir())]


def cvat_zip(samples) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("labelmap.txt", "# label:color_rgb:parts:actions\n" + "".join(
            f"{name}:{r},{g},{b}::\n" for name, (r, g, b) in COLOURS.items()))
        zf.writestr("ImageSets/Segmentation/default.txt", "".join(f"{stem}\n" for stem, _, _ in samples))
        for stem, image, mask in samples:
            colours = np.zeros((*mask.shape, 3), np.uint8)
            for k, shape in enumerate(SHAPES[:3], start=1):
                colours[mask == k] = COLOURS[shape]
            out = io.BytesIO()
            Image.fromarray(colours).save(out, format="PNG")
            zf.writestr(f"SegmentationClass/{stem}.png", out.getvalue())
            zf.writestr(f"JPEGImages/{stem}.png", image)
    return buf.getvalue()


def coco_zip(samples) -> bytes:
    """One annotation per shape per image: compressed RLE for discs, the bounding polygon of each
    square's pixels, an uncompressed (list) RLE for triangles."""
    categories = [{"id": 10 + k, "name": name, "supercategory": ""} for k, name in enumerate(SHAPES[:3])]
    images, annotations = [], []
    for i, (stem, _, mask) in enumerate(samples, start=1):
        images.append({"id": i, "file_name": f"{stem}.png", "height": mask.shape[0], "width": mask.shape[1]})
        for k, name in enumerate(SHAPES[:3], start=1):
            binary = np.asfortranarray((mask == k).astype(np.uint8))
            if not binary.any():
                continue
            rle = coco_mask.encode(binary)
            if name == "square":
                ys, xs = np.nonzero(binary)
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                segmentation = [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]]
            elif name == "disc":
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
            else:
                flat = binary.ravel(order="F")
                runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat.astype(int), -1]) != 0))
                counts = ([0] if flat[0] else []) + runs.tolist()
                segmentation = {"size": list(binary.shape), "counts": counts}
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 10 + k - 1,
                                "segmentation": segmentation, "area": float(binary.sum()), "iscrowd": 0,
                                "bbox": [float(v) for v in coco_mask.toBbox(rle)]})
    doc = {"info": {}, "licenses": [], "categories": categories, "images": images, "annotations": annotations}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("annotations/instances_default.json", json.dumps(doc))
        for stem, image, _ in samples:
            zf.writestr(f"images/{stem}.png", image)
    return buf.getvalue()


def test_a_cvat_export_then_a_coco_export_train_two_versions(client, worker_process, admin_headers, infer_headers,
                                                             tmp_path):
    h = admin_headers
    create_model(client, h, "exports")
    # Step 1, from CVAT: the spec names disc before square (the labelmap has square first).
    first = submit(client, h, {**SMALL, "classes": ["disc", "square"], "epochs": 2},
                   cvat_zip(shapes(tmp_path, "a", 12, [1, 2], seed=1)), model="exports")
    assert first["classes"] == {"disc": 1, "square": 2}
    report = first["import_report"]
    assert report["format"] == "cvat_mask" and report["images"] == 12
    assert report["class_images"] == {"disc": 12, "square": 12} and report["issues"] == []
    done = wait_task(client, h, first["id"])
    assert done["status"] == "succeeded", done
    # Step 2, from COCO: the new triangle, with the squares labelled too; discs are not named, so
    # other_labels "background" makes them background, as MiB's protocol has old classes unlabelled.
    hp = {k: v for k, v in SMALL["hyperparameters"].items() if k != "pretrained_backbone"}
    second = submit(client, h, {**SMALL, "hyperparameters": hp, "architecture": None, "classes": ["triangle"],
                                "also_labelled": ["square"], "other_labels": "background", "epochs": 1},
                    coco_zip(shapes(tmp_path, "b", 8, [1, 2, 3], seed=2)), model="exports")
    report = second["import_report"]
    assert report["format"] == "coco" and report["class_images"] == {"triangle": 8, "square": 8}
    issues = {i["kind"]: i for i in report["issues"]}
    assert issues["unknown_labels"]["labels"] == {"disc": 8}
    # A square's polygon is its bounding box, which may take pixels of a shape drawn over it: reported.
    assert set(issues) <= {"unknown_labels", "overlaps_resolved"}
    done = wait_task(client, h, second["id"])
    assert done["status"] == "succeeded", done
    assert done["model_version"] == 2 and done["classes"] == {"triangle": 3}
    # Whether version 2 became production is the promotion policy's call (tiny runs forget): serve it by number.
    r = segment(client, infer_headers, "exports", "2")
    assert r.status_code == 200 and r.json()["model_version"] == 2
