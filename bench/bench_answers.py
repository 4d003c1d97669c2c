"""What each /segment answer costs to encode, against today's index PNG, on CamVid's masks.

For every image of a CamVid split (480x360; its ground-truth mask stands in for a prediction: the
same classes, shapes and boundaries a good model answers), the answers ``/segment`` can give are
encoded in this process, taking turns image by image: the index PNG (``format=png``, the baseline:
what every answer already paid before issue 12), the JSON answer (pixel counts + the PNG in
base64), the per-class COCO RLE (``format=rle``, serialised to JSON) and the colour overlay
(``render=overlay``). The forward is left out: it costs the same whatever the answer (see
bench_segment.py for it). Prints each answer's median time and size, and its ratio to the PNG.

    .venv/bin/python bench/bench_answers.py               # the val split (101 images)
    .venv/bin/python bench/bench_answers.py --json r.json
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from services.inference.answers import class_regions, overlay_png  # noqa: E402
from services.inference.images import class_pixel_counts, encode_mask_png  # noqa: E402

CAMVID = ROOT.parent / "shared" / "datasets" / "camvid"


def answers(names):
    def json_answer(image, mask):
        return json.dumps({"classes": class_pixel_counts(mask, names),
                           "mask_png": base64.b64encode(encode_mask_png(mask)).decode()}).encode()

    def rle_answer(image, mask):
        return json.dumps({"classes": [asdict(region) for region in class_regions(mask, names)]}).encode()

    return {"png": lambda image, mask: encode_mask_png(mask), "json": json_answer, "rle": rle_answer,
            "overlay": lambda image, mask: overlay_png(image, mask)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="val")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    classes = json.loads((CAMVID / "classes.json").read_text())
    names = {0: "background", **{int(k) + 1: v for k, v in classes.items()}}
    samples = []
    for path in sorted((CAMVID / args.split / "images").glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        mask = np.asarray(Image.open(CAMVID / args.split / "masks" / f"{path.stem}.png"))
        samples.append((image, np.where(mask == 255, 0, mask + 1).astype(np.uint8)))  # a model never answers void
    encoders = answers(names)
    times: dict[str, list[float]] = {k: [] for k in encoders}
    sizes: dict[str, list[int]] = {k: [] for k in encoders}
    for image, mask in samples:
        for name, encode in encoders.items():  # taking turns: drift hits every answer alike
            started = time.perf_counter()
            out = encode(image, mask)
            times[name].append(time.perf_counter() - started)
            sizes[name].append(len(out))
    base = statistics.median(times["png"])
    print(f"CamVid {args.split}: {len(samples)} masks of {samples[0][1].shape[1]}x{samples[0][1].shape[0]}, medians")
    print(f"{'answer':<10} {'ms':>7} {'KB':>7} {'vs png':>7}")
    rows = []
    for name in encoders:
        median = statistics.median(times[name])
        rows.append({"answer": name, "ms": round(1000 * median, 3), "kb": round(statistics.median(sizes[name]) / 1024, 1),
                     "ratio": round(median / base, 3)})
        print(f"{name:<10} {1000 * median:>7.2f} {statistics.median(sizes[name]) / 1024:>7.1f} {median / base:>6.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "images": len(samples), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
