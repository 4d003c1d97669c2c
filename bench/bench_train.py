"""What distillation costs, and what our trainer costs over a bare PyTorch loop.

In one run, on one fixed random batch and one model (a teacher with --old-classes classes and a
student grown from it by --new-classes), this times training steps of:
  (a) each distillation method (default ld, le, ld+le) against plain fine-tuning (ft), all through
      our trainer's ``train_step``: the ratio is the price of the teacher's forward pass and the
      extra loss terms;
  (b) ft through ``train_step`` against a bare loop (same model, cross-entropy, SGD, same
      precision): the ratio is the overhead of our method/loss plumbing.
Each repeat times every variant in turn (interleaved, so drifting machine load hits them all
alike); a variant's time is the median over repeats of its per-repeat median step time.

    python bench/bench_train.py                      # lraspp_mobilenet_v3_large, 128 px, batch 4
    python bench/bench_train.py --model deeplabv3_resnet101 --image-size 512 --batch-size 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from services.learning import benchmark  # noqa: E402
from services.learning.names import ARCHITECTURES, METHODS, SMALL_ARCHITECTURE  # noqa: E402


def run(
    model: str = SMALL_ARCHITECTURE, *, image_size: int = 128, batch_size: int = 4, steps: int = 5,
    warmup: int = 2, repeats: int = 3, device: str = "auto", methods: tuple[str, ...] = ("ld", "le", "ld+le"),
    amp: bool = True,
) -> dict:
    """Time the variants and return the report (median step times in ms and their ratios)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    setup = benchmark.make_setup(model, image_size=image_size, batch_size=batch_size, device=device, amp=amp)
    variants = {"bare": benchmark.bare_step(setup), "ft": benchmark.method_step(setup, "ft")}
    variants.update({m: benchmark.method_step(setup, m) for m in methods if m != "ft"})
    per_repeat: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, step in variants.items():
            times = benchmark.time_steps(step, steps=steps, warmup=warmup, device=setup.device)
            per_repeat[name].append(statistics.median(times))
    median = {name: statistics.median(values) for name, values in per_repeat.items()}
    return {
        "model": model, "device": str(setup.device),
        "precision": str(setup.amp_dtype or "float32").removeprefix("torch."),
        "image_size": image_size, "batch_size": batch_size, "steps": steps, "warmup": warmup, "repeats": repeats,
        "cpu_threads": torch.get_num_threads(),
        "step_ms_median": {k: round(v, 3) for k, v in median.items()},
        "distillation_over_ft": {m: round(median[m] / median["ft"], 3) for m in methods if m != "ft"},
        "trainer_over_bare": round(median["ft"] / median["bare"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=ARCHITECTURES, default=SMALL_ARCHITECTURE)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant and repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--methods", default="ld,le,ld+le", help="comma-separated methods to compare with ft")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA too")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 on a small shared machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run(args.model, image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                     warmup=args.warmup, repeats=args.repeats, device=args.device,
                     methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), amp=not args.no_amp)
    except ValueError as err:
        print(f"bench_train: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['model']} on {report['device']} ({report['precision']}), "
          f"batch {report['batch_size']} x {report['image_size']} px, {report['repeats']} repeats x {report['steps']} steps")
    for name, ms in report["step_ms_median"].items():
        print(f"  {name:>8}: {ms:9.1f} ms/step")
    for name, ratio in report["distillation_over_ft"].items():
        print(f"  {name} / ft step time: {ratio:.2f}")
    print(f"  trainer / bare loop step time: {report['trainer_over_bare']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
