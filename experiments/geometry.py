"""What squashing images to a square did to the scores, per class: one trained model, two ways.

    python experiments/geometry.py MODEL.pt [--data ../shared/datasets/camvid] [--size 160]

MODEL.pt: a model file of ``strata experiment`` (e.g. a cached base under var/exp/cache) whose
channels are background + the dataset's first classes. It is scored on the validation split
(a) as before issue 8: image and mask resized to size x size whatever their aspect ratio, scored
at that squashed size; (b) as now: the shorter side at ``size``, the whole image predicted and
its logits upsampled to the label's own resolution. Prints per-class IoU (%) for both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from services.data.datasets import open_source  # noqa: E402
from services.data.step_dataset import SegmentationDataset  # noqa: E402
from services.data.transforms import EvalTransform, image_to_tensor, mask_to_tensor, normalize  # noqa: E402
from services.evaluation.evaluate import evaluate  # noqa: E402
from services.labels import IGNORE_INDEX  # noqa: E402
from services.learning.checkpoint import load_model  # noqa: E402


class SquashTransform:
    """The evaluation geometry before issue 8: both resized to size x size, scored there."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image, mask: Image.Image):
        s = (self.size, self.size)
        return (normalize(image_to_tensor(image.convert("RGB").resize(s, Image.BILINEAR))),
                mask_to_tensor(mask.resize(s, Image.NEAREST)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, default=Path("../shared/datasets/camvid"))
    p.add_argument("--size", type=int, default=160)
    args = p.parse_args()
    loaded = load_model(args.model)
    model, n = loaded.model, loaded.model.num_classes
    source = open_source(args.data, "val")
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)  # the model's classes scored, later ones void
    lut[:n] = np.arange(n)
    names = [loaded.class_map[c] for c in range(n)]
    rows = {}
    for label, transform in (("squashed", SquashTransform(args.size)), ("aspect kept", EvalTransform(args.size))):
        result = evaluate(model, SegmentationDataset(source, None, lut, transform), n)
        rows[label] = result
    print(f"{args.model.name}: {len(source)} validation images, size {args.size}; IoU %")
    print("| class | squashed, scored at size x size | aspect kept, scored at the label's resolution | difference |")
    print("|---|---|---|---|")
    for c, name in enumerate(names):
        a, b = rows["squashed"].iou[c], rows["aspect kept"].iou[c]
        if a is None or b is None or not rows["aspect kept"].confusion.gt_pixels[c]:
            continue  # a class without labelled pixels (here: background) is not scored
        print(f"| {name} | {100 * a:.1f} | {100 * b:.1f} | {100 * (b - a):+.1f} |")
    a, b = rows["squashed"].miou_all, rows["aspect kept"].miou_all
    print(f"| mIoU | {100 * a:.1f} | {100 * b:.1f} | {100 * (b - a):+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
