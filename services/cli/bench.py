"""``strata bench train``: time training steps of a model and method on random data."""

from __future__ import annotations

import argparse
import json
import sys

from services.learning.names import ARCHITECTURES, METHODS, SMALL_ARCHITECTURE


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _train(args: argparse.Namespace) -> int:
    # Imported here: building the parser for other commands must not pay for torch.
    import torch

    from services.learning import benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        setup = benchmark.make_setup(
            args.model, image_size=args.image_size, batch_size=args.batch_size, device=args.device,
            num_old=args.old_classes, num_new=args.new_classes, amp=not args.no_amp,
        )
    except ValueError as err:
        print(f"strata bench train: {err}", file=sys.stderr)
        return 2
    times = benchmark.time_steps(benchmark.method_step(setup, args.method), steps=args.steps,
                                 warmup=args.warmup, device=setup.device)
    result = {
        "model": args.model, "method": args.method, "device": str(setup.device),
        "precision": str(setup.amp_dtype or "float32").removeprefix("torch."),
        "image_size": args.image_size, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "cpu_threads": torch.get_num_threads(),
        **benchmark.summarize(times, args.batch_size),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} {args.method} on {result['device']} ({result['precision']}), "
              f"{args.batch_size}x{args.image_size}px: median {result['step_ms_median']:.1f} ms/step, "
              f"{result['images_per_s']:.1f} images/s over {args.steps} steps")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks", description=(
        "Benchmarks that need no service: `strata bench train` times training steps of a network and method on "
        "random data (images/s, against nothing: the scripts in bench/ print ratios against a bare baseline)."))
    kinds = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    p = kinds.add_parser("train", help="time training steps on random data after a warm-up")
    p.add_argument("--model", choices=ARCHITECTURES, default=SMALL_ARCHITECTURE)
    p.add_argument("--method", choices=METHODS, default="ft")
    p.add_argument("--image-size", type=_positive, default=128)
    p.add_argument("--batch-size", type=_positive, default=4)
    p.add_argument("--steps", type=_positive, default=10, help="timed steps")
    p.add_argument("--warmup", type=_non_negative, default=3, help="untimed steps first")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--old-classes", type=_positive, default=16, help="classes of the teacher (with background)")
    p.add_argument("--new-classes", type=_positive, default=5, help="classes the step adds")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA too")
    p.add_argument("--threads", type=_positive, default=None,
                   help="torch CPU threads (default: torch's choice; 1 on a small shared machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_train)
