"""What reading each annotation format costs, and whether it reads CamVid back exactly.

The CamVid split is written in every format Strata imports (as each tool lays its export out; the
class names are CamVid's, and its void pixels are void in each: a "void" label where the format
has no void of its own, read with ``other_labels: "ignore"``), zipped, then read as
POST /models/{name}/tasks reads an upload -- unpacked, read in its format, every image decoded and
every mask converted to local index form, the report finished (``read_upload`` + ``prepare_items``:
no HTTP, no object store, no database, which cost the same whatever the format) -- ``--repeats``
times, alternating formats. The baseline is Strata's own format ("masks": images/ + masks/ of
index PNGs) read the same way in the same run; each format's time is printed as a ratio to it.
Every mask read is compared with CamVid's own (value v -> local v + 1, 255 void): "exact" means
every pixel of every image agrees.

    .venv/bin/python bench/bench_import.py                  # the train split (367 images)
    .venv/bin/python bench/bench_import.py --limit 40 --repeats 1
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from pycocotools import mask as coco_mask  # noqa: E402

from services.data.archive import ArchiveLimits  # noqa: E402
from services.data.formats import read_upload  # noqa: E402
from services.data.multipart import Received  # noqa: E402
from services.data.upload import ReceivedFile, prepare_items  # noqa: E402
from services.jobs.spec import parse_spec  # noqa: E402
from services.labels import IGNORE_INDEX, voc_colour  # noqa: E402

CAMVID = ROOT.parent / "shared" / "datasets" / "camvid"
VOID = "void"
LIMITS = ArchiveLimits(max_bytes=8 * 1024**3, max_ratio=10_000)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def load(split: Path, limit: int | None) -> list[tuple[str, bytes, np.ndarray]]:
    """(stem, JPEG bytes, CamVid mask) of the split's images."""
    images = sorted((split / "images").glob("*.jpg"))[:limit]
    return [(p.stem, p.read_bytes(), np.asarray(Image.open(split / "masks" / f"{p.stem}.png"))) for p in images]


# --- writers: CamVid in each tool's layout ------------------------------------------------------------
def write_masks(names, data, zf):
    for stem, jpg, mask in data:
        zf.writestr(f"images/{stem}.jpg", jpg)
        zf.writestr(f"masks/{stem}.png", png(np.where(mask == 255, 255, mask + 1).astype(np.uint8)))
    return {}


def write_cvat(names, data, zf):
    colours = {"background": (0, 0, 0), **{n: voc_colour(k + 1) for k, n in enumerate(names)},
               VOID: (224, 224, 192)}
    zf.writestr("labelmap.txt", "# label:color_rgb:parts:actions\n" + "".join(
        f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in colours.items()))
    zf.writestr("ImageSets/Segmentation/default.txt", "".join(f"{stem}\n" for stem, _, _ in data))
    lut = np.array([colours[names[v]] if v < len(names) else colours[VOID] for v in range(256)], np.uint8)
    for stem, jpg, mask in data:
        zf.writestr(f"JPEGImages/{stem}.jpg", jpg)
        zf.writestr(f"SegmentationClass/{stem}.png", png(lut[mask]))
    return {"other_labels": "ignore"}


def _coco_doc(names, data, segment):
    categories = [{"id": 100 + k, "name": n, "supercategory": ""} for k, n in enumerate([*names, VOID])]
    images, annotations = [], []
    for i, (stem, _, mask) in enumerate(data, start=1):
        images.append({"id": i, "file_name": f"{stem}.jpg", "height": mask.shape[0], "width": mask.shape[1]})
        for k in range(len(names) + 1):
            binary = mask == (k if k < len(names) else 255)
            if binary.any():
                annotations.append(segment(len(annotations) + 1, i, 100 + k, binary))
    return {"info": {}, "licenses": [], "categories": categories, "images": images, "annotations": annotations}


def write_coco(names, data, zf):
    def segment(ann_id, image_id, category_id, binary):
        rle = coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))
        return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                "area": float(binary.sum()), "bbox": [float(v) for v in coco_mask.toBbox(rle)]}

    zf.writestr("annotations/instances_default.json", json.dumps(_coco_doc(names, data, segment)))
    for stem, jpg, _ in data:
        zf.writestr(f"images/{stem}.jpg", jpg)
    return {"other_labels": "ignore"}


def write_coco_panoptic(names, data, zf):
    categories = [{"id": 100 + k, "name": n, "supercategory": "", "isthing": 0} for k, n in enumerate(names)]
    images, annotations = [], []
    for i, (stem, jpg, mask) in enumerate(data, start=1):
        h, w = mask.shape
        ids = np.zeros((h, w), np.int64)  # 0: void
        segments = []
        for k in np.unique(mask[mask != 255]).tolist():
            segment_id = 1 + 7 * k + 256 * 3  # any distinct ids; spread over R and G
            ids[mask == k] = segment_id
            segments.append({"id": segment_id, "category_id": 100 + k, "iscrowd": 0, "area": int((mask == k).sum())})
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        images.append({"id": i, "file_name": f"{stem}.jpg", "height": h, "width": w})
        annotations.append({"image_id": i, "file_name": f"{stem}.png", "segments_info": segments})
        zf.writestr(f"panoptic_train/{stem}.png", png(rgb))
        zf.writestr(f"images/{stem}.jpg", jpg)
    zf.writestr("panoptic_train.json", json.dumps({"images": images, "annotations": annotations,
                                                   "categories": categories}))
    return {}


def write_voc(names, data, zf):
    palette = [c for v in range(256) for c in voc_colour(v)]
    zf.writestr("VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt", "".join(f"{stem}\n" for stem, _, _ in data))
    for stem, jpg, mask in data:
        im = Image.fromarray(np.where(mask == 255, 255, mask + 1).astype(np.uint8), mode="L").convert("P")
        im.putpalette(palette)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        zf.writestr(f"VOCdevkit/VOC2012/SegmentationClass/{stem}.png", buf.getvalue())
        zf.writestr(f"VOCdevkit/VOC2012/JPEGImages/{stem}.jpg", jpg)
    return {"format": "voc", "label_ids": {n: k + 1 for k, n in enumerate(names)}}


def write_cityscapes(names, data, zf):
    for stem, jpg, mask in data:
        city = "cambridge"
        rgb = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
        zf.writestr(f"leftImg8bit/train/{city}/{stem}_leftImg8bit.png", png(rgb))
        ids = np.where(mask == 255, 0, mask + 1).astype(np.uint8)  # 0: "unlabeled", void
        zf.writestr(f"gtFine/train/{city}/{stem}_gtFine_labelIds.png", png(ids))
    return {"format": "cityscapes", "label_ids": {"unlabeled": 0, **{n: k + 1 for k, n in enumerate(names)}}}


def write_label_studio(names, data, zf):
    from label_studio_sdk.converter.brush import encode_rle  # the tool's own encoder (a test dependency)

    tasks = []
    for i, (stem, jpg, mask) in enumerate(data, start=1):
        h, w = mask.shape
        results = []
        for k in range(len(names) + 1):
            binary = mask == (k if k < len(names) else 255)
            if not binary.any():
                continue
            rgba = np.zeros((h, w, 4), np.uint8)
            rgba[binary] = 255
            results.append({"id": f"r{i}-{k}", "type": "brushlabels", "from_name": "tag", "to_name": "image",
                            "original_width": w, "original_height": h, "image_rotation": 0,
                            "value": {"format": "rle", "rle": [int(v) for v in encode_rle(rgba.ravel())],
                                      "brushlabels": [names[k] if k < len(names) else VOID]}})
        tasks.append({"id": i, "data": {"image": f"/data/upload/1/{hashlib.sha1(stem.encode()).hexdigest()[:8]}-{stem}.jpg"},
                      "annotations": [{"id": i, "result": results, "was_cancelled": False, "ground_truth": False}]})
        zf.writestr(f"images/{stem}.jpg", jpg)
    zf.writestr("project-1-at-2026-11-30.json", json.dumps(tasks))
    return {"other_labels": "ignore"}


WRITERS = {"masks": write_masks, "cvat_mask": write_cvat, "coco": write_coco, "coco_panoptic": write_coco_panoptic,
           "voc": write_voc, "cityscapes": write_cityscapes, "label_studio": write_label_studio}


# --- reading ------------------------------------------------------------------------------------------
def read(archive: Path, spec: dict, work: Path) -> tuple[float, str, list]:
    """Seconds to read the archive as registration does; the format read; the prepared items."""
    data = archive.read_bytes()
    received = Received(texts={}, files={"archive": [ReceivedFile(archive.name, archive, len(data),
                                                                  hashlib.sha256(data).hexdigest())]})
    parsed = parse_spec(json.dumps(spec))
    started = time.perf_counter()
    dataset = read_upload(received, parsed.format, parsed.import_options(), work, LIMITS)
    items = prepare_items(dataset.samples, 10**8, work / "masks")
    dataset.finish(items)
    return time.perf_counter() - started, dataset.format, items


def exact(items, data) -> bool:
    expected = {stem: np.where(mask == 255, IGNORE_INDEX, mask + 1) for stem, _, mask in data}
    return len(items) == len(data) and all(
        np.array_equal(np.asarray(Image.open(item.mask_path)), expected[item.stem]) for item in items)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    names = [v for _, v in sorted(json.loads((CAMVID / "classes.json").read_text()).items(), key=lambda kv: int(kv[0]))]
    data = load(CAMVID / args.split, args.limit)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        tmp = Path(tmp)
        archives, specs = {}, {}
        for fmt, write in WRITERS.items():
            archives[fmt] = tmp / f"{fmt}.zip"
            with zipfile.ZipFile(archives[fmt], "w", zipfile.ZIP_DEFLATED) as zf:
                specs[fmt] = {"classes": names, **write(names, data, zf)}
        sizes = {fmt: path.stat().st_size / 1e6 for fmt, path in archives.items()}
        times: dict[str, list[float]] = {fmt: [] for fmt in WRITERS}
        checks: dict[str, tuple[str, bool]] = {}
        for r in range(args.repeats):
            for fmt in WRITERS:  # alternating: drift on a noisy machine hits every format alike
                work = tmp / f"work-{fmt}-{r}"
                seconds, read_as, items = read(archives[fmt], specs[fmt], work)
                times[fmt].append(seconds)
                if r == 0:
                    checks[fmt] = (read_as, exact(items, data))
                shutil.rmtree(work)
    base = statistics.median(times["masks"])
    rows = []
    print(f"CamVid {args.split}: {len(data)} images, {args.repeats} repeats, medians")
    print(f"{'format':<14} {'recognised as':<14} {'zip MB':>7} {'s':>7} {'images/s':>9} {'vs masks':>9}  exact")
    for fmt in WRITERS:
        median = statistics.median(times[fmt])
        size = sizes[fmt]
        rows.append({"format": fmt, "recognised_as": checks[fmt][0], "seconds": median,
                     "images_per_s": len(data) / median, "ratio": median / base, "exact": checks[fmt][1]})
        print(f"{fmt:<14} {checks[fmt][0]:<14} {size:>7.1f} {median:>7.2f} {len(data) / median:>9.1f} "
              f"{median / base:>8.2f}x  {'yes' if checks[fmt][1] else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"images": len(data), "rows": rows}, indent=1))
    return 0 if all(ok for _, ok in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
