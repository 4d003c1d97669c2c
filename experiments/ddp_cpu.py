"""One task on two processes (gloo, the CPU) against one process with the same global batch: how far
the results drift apart, and the time per image.

    python experiments/ddp_cpu.py [--size 64] [--images 32] [--batch 8] [--epochs 4] [--rounds 3] [--json PATH]

Differences: an incremental MiB step with BatchNorm frozen, and a first step with BatchNorm training
(synchronised over the ranks) then recalibrated: max abs weight difference and the BatchNorm
statistics' max difference relative to their layer's largest. Speed: images/s of the second epoch
(median over the steps, then over ``--rounds`` alternated rounds) for one process with 1 thread,
one with 2 threads, and two ranks with 1 thread each. LR-ASPP MobileNetV3, random init, random
images with flips (tests/services/learning/ddp_run.py builds the step).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from tests.services.learning.ddp_run import config, run  # noqa: E402
from tests.services.learning.tiny import RandomSegDataset  # noqa: E402

CLASSES = 5


def differences(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    out = {}
    for method, batchnorm in (("mib", "frozen"), ("ft", "recalibrate")):
        torch.set_num_threads(2)
        cfg = config(epochs=args.epochs, batch_size=args.batch, batchnorm=batchnorm)
        one, two = (run(world, method, cfg, dataset=RandomSegDataset(args.images, CLASSES, size=args.size, flip=True))
                    for world in (1, 2))
        stats = [k for k in one if "running" in k and one[k].abs().max() > 1e-3]
        out[f"{method}, batchnorm {batchnorm}"] = {
            "steps": args.epochs * (args.images // args.batch),
            "max_abs_weight_diff": max((one[k] - two[k]).abs().max().item() for k in one
                                       if one[k].is_floating_point() and "running" not in k),
            "max_rel_stats_diff": max(((one[k] - two[k]).abs().max() / one[k].abs().max()).item() for k in stats),
        }
    return out


def speed(args: argparse.Namespace) -> dict[str, float]:
    rates: dict[str, list[float]] = {"1 process, 1 thread": [], "1 process, 2 threads": [], "2 ranks, 1 thread each": []}
    for _ in range(args.rounds):
        for name, world, threads in (("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
                                     ("2 ranks, 1 thread each", 2, 1)):
            torch.set_num_threads(threads * world)  # train_distributed gives each rank threads // world
            seen: list[float] = []
            run(world, "ft", config(epochs=2, batch_size=args.batch),
                dataset=RandomSegDataset(args.images, CLASSES, size=args.size, flip=True),
                on_progress=lambda p, seen=seen: seen.append(p.images_per_s) if p.epoch == 2 else None)
            rates[name].append(sorted(seen)[len(seen) // 2])
    return {name: sorted(v)[len(v) // 2] for name, v in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = {"differences": differences(args), "images_per_s": speed(args)}
    ips = figures["images_per_s"]
    figures["time_2_ranks_over_1_process_1_thread"] = ips["1 process, 1 thread"] / ips["2 ranks, 1 thread each"]
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
