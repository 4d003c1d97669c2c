"""``strata demo``: a first run that shows something, against the running service (``make run``).

It draws a small synthetic dataset (coloured shapes on noise: services/data/synthetic.py), creates a
model, submits a base task that learns two classes and an incremental task that adds a third —
labelled alone, as annotators of a new class label it, the old classes kept by distilling version
1 — follows both with progress bars, and prints the two versions, what version 2 learnt and forgot,
and where to look. Networks start from random weights (nothing to download): on two CPU cores it
finishes in a few minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from services.cli.remote import OK, REFUSED, client_command, common_flags, points, print_json, print_table, say
from services.data.synthetic import SHAPES, draw_shapes_image

DEFAULT_MODEL = "demo"
BASE_CLASSES, NEW_CLASS = (1, 2), 3  # square and disc first, then the triangle
VAL_FRACTION = 0.25  # a quarter of a small upload scores it: fewer images would make the IoUs jump from run to run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", parents=[common_flags(model=False)], help="train a demo model with two versions",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help=f"the model to create (default {DEFAULT_MODEL!r}, or the first "
                                                 f"free {DEFAULT_MODEL}-2, -3, ...)")
    p.add_argument("--images", type=int, default=64, help="images per task (default 64)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--epochs", type=int, default=16, help="epochs of each task (default 16)")
    p.add_argument("--keep-data", type=Path, metavar="DIR", help="write the generated datasets here and keep them")
    p.set_defaults(func=_demo)


@client_command
def _demo(args: argparse.Namespace, client) -> int:
    from services.cli.watch import follow

    if not 8 <= args.images <= 2000:
        raise argparse.ArgumentTypeError("--images: must be 8 to 2000")
    if not 32 <= args.size <= 1024:
        raise argparse.ArgumentTypeError("--size: must be 32 to 1024")
    if not 1 <= args.epochs <= 200:
        raise argparse.ArgumentTypeError("--epochs: must be 1 to 200")
    started = time.monotonic()
    model = _free_name(client, args.model)
    client.create_model(model, "strata demo: synthetic shapes, two classes then a third")
    say(f"created model {model} on {client.config.url}")
    with tempfile.TemporaryDirectory(prefix="strata-demo-") as tmp:
        root = args.keep_data or Path(tmp)
        base = _write(root / "base", args.images, args.size, BASE_CLASSES, seed=0)
        step = _write(root / "step", args.images, args.size, (NEW_CLASS,), seed=1)
        tasks = []
        for name, folder, classes in (("base", base, [SHAPES[c - 1] for c in BASE_CLASSES]),
                                      ("step", step, [SHAPES[NEW_CLASS - 1]])):
            spec = {"classes": classes, "epochs": args.epochs, "image_size": args.size, "batch_size": 8,
                    "val_fraction": VAL_FRACTION,
                    "hyperparameters": {"lr": 0.05, "seed": 0, "pretrained_backbone": False}}
            task = client.submit(model, folder, spec)
            say(f"{name} task {task.id} queued: {', '.join(classes)}")
            task = follow(client, task.id, label=f"{name} ({', '.join(classes)})", quiet=args.json)
            if task.status != "succeeded":
                say(f"{name} task {task.status}: {task.error}")
                return REFUSED
            tasks.append(task)
    return _summary(args, client, model, tasks, time.monotonic() - started)


def _free_name(client, asked: str | None) -> str:
    names = {m.name for m in client.models()}
    if asked:
        if asked in names:
            raise argparse.ArgumentTypeError(f"--model: model {asked!r} exists already; name a new one")
        return asked
    return next(n for n in (DEFAULT_MODEL, *(f"{DEFAULT_MODEL}-{i}" for i in range(2, 10_000))) if n not in names)


def _write(folder: Path, count: int, size: int, labelled: tuple[int, ...], seed: int) -> Path:
    """``count`` images showing every shape up to the largest labelled one, with masks that label only
    ``labelled`` (as values 1, 2, ... in that order): the rest is background, as an annotator who labels
    only a task's new classes leaves it."""
    rng = np.random.default_rng(seed)
    value = np.zeros(256, np.uint8)
    for local, shape in enumerate(labelled, start=1):
        value[shape] = local
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = draw_shapes_image(size, list(range(1, max(labelled) + 1)), rng)
        image.save(folder / "images" / f"{i:04d}.png")
        Image.fromarray(value[np.asarray(mask)]).save(folder / "masks" / f"{i:04d}.png")
    return folder


def _summary(args, client, model: str, tasks, seconds: float) -> int:
    versions = client.versions(model)
    comparison = client.compare(model, a=tasks[0].model_version, b=tasks[1].model_version)
    if args.json:
        print_json({"model": model, "seconds": round(seconds, 1), "tasks": [t.id for t in tasks],
                    "versions": [v.model_dump(mode="json") for v in versions],
                    "compare": comparison.model_dump(mode="json")})
        return OK
    print_table(f"model {model}: versions", ("version", "parent", "method", "classes", "old", "new", "all", "aliases"),
                ((v.version, v.parent, v.method, v.num_classes - 1, points(v.miou.old), points(v.miou.new),
                  points(v.miou.all), ", ".join(v.aliases)) for v in versions))
    print_table("version 2 against version 1, IoU per class", ("class", "iou 1", "iou 2", "delta"),
                ((c.name, points(c.iou_a) if c.in_a else "(new)", points(c.iou_b), "-" if c.delta is None
                  else f"{100 * c.delta:+.1f}") for c in comparison.classes))
    url = client.config.url
    print(f"\ndone in {seconds / 60:.1f} min. Look at:\n"
          f"  {url}/dashboard                    the dashboard: versions, what each knows and forgot\n"
          f"  {url}/models/{model}/versions      the versions as JSON (an API key: var/api-keys.txt)\n"
          f"  strata versions --model {model}     the same here; `strata compare 1 2 --model {model}`\n"
          f"  strata segment IMAGE --model {model} --out mask.png [--overlay]")
    return OK
