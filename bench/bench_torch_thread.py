"""Does a forward run slower on a thread other than the one that loaded and warmed the model?

Each measurement is a fresh process (OpenMP teams live as long as their threads, so a process
measures one arrangement only): the model (LR-ASPP MobileNetV3, random init) is loaded and run
twice on thread A, then ``--forwards`` forwards of one 4:3 image at ``--image-size`` are timed
either on A again ("same", what services/inference/compute.py arranges for /segment) or on a
second thread B while A idles ("other", what the service did before: warm-up on a loader thread,
forwards on the batcher thread). The two arrangements alternate, ``--runs`` processes each; the
ratio other/same of the median forward is printed.

    python bench/bench_torch_thread.py --image-size 256 --runs 3 --json thread.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(mode: str, image_size: int, forwards: int) -> float:
    """One arrangement in this process: the median forward in ms."""
    import torch

    from services.learning.names import SMALL_ARCHITECTURE
    from services.learning.zoo import build_model

    a, b = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    x = torch.randn(1, 3, image_size, image_size * 4 // 3)

    def load():
        torch.manual_seed(0)
        model = build_model(SMALL_ARCHITECTURE, 4).eval()
        with torch.inference_mode():
            model(x), model(x)
        return model

    model = a.submit(load).result()

    def timed() -> float:
        times = []
        with torch.inference_mode():
            for _ in range(forwards):
                started = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    return (a if mode == "same" else b).submit(timed).result()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=256, help="the image's shorter side (px)")
    p.add_argument("--forwards", type=int, default=40, help="timed forwards per process")
    p.add_argument("--runs", type=int, default=3, help="processes per arrangement, alternated")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    p.add_argument("--one", choices=["same", "other"], help=argparse.SUPPRESS)  # a child process
    args = p.parse_args(argv)
    if args.one:
        print(measure(args.one, args.image_size, args.forwards))
        return 0
    ms: dict[str, list[float]] = {"same": [], "other": []}
    load_before = os.getloadavg()
    for _ in range(args.runs):
        for mode in ms:
            out = subprocess.run([sys.executable, __file__, "--one", mode, "--image-size", str(args.image_size),
                                  "--forwards", str(args.forwards)], check=True, capture_output=True, text=True)
            ms[mode].append(round(float(out.stdout.split()[-1]), 1))
    result = {"image_size": args.image_size, "forward_ms": ms,
              "median_ms": {k: statistics.median(v) for k, v in ms.items()},
              "ratio_other_to_same": round(statistics.median(ms["other"]) / statistics.median(ms["same"]), 2),
              "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
              "load_before": [round(v, 2) for v in load_before],
              "load_after": [round(v, 2) for v in os.getloadavg()]}
    print(f"LR-ASPP at {args.image_size} px, batch 1: forward on the warm-up thread {ms['same']} ms, "
          f"on another thread {ms['other']} ms; other/same {result['ratio_other_to_same']} "
          f"(load {result['load_before'][0]} -> {result['load_after'][0]})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
