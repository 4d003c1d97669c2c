"""The quick start on a machine without a GPU, measured: what the default network and image size cost
against the papers' (the defaults of issue 13's decision), and `strata demo` end to end.

  (a) defaults: training images/s of a first step (plain cross-entropy, batch 8) for each
      (architecture, image size) on this machine's CPU, and the ratio against the papers' network at
      their crop (deeplabv3_resnet101 at 512 px) measured in the same run; with the minutes a first
      task of the README's kind would take (``--task-images`` x ``--task-epochs``).
  (b) the demo: `strata run` on a fresh embedded data dir (a subprocess, as `make run` starts it), then
      `strata demo --json` timed from its start to its last version, with the versions' mIoU.

    python bench/bench_quickstart.py                     # both
    python bench/bench_quickstart.py --skip-defaults     # the demo only
    python bench/bench_quickstart.py --steps 2 --json r.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
from bench_ingest import free_port, wait_healthy  # noqa: E402

from services.learning.names import DEFAULT_ARCHITECTURE, DEFAULT_IMAGE_SIZE, PAPER_ARCHITECTURE, PAPER_IMAGE_SIZE  # noqa: E402

CANDIDATES = [(PAPER_ARCHITECTURE, PAPER_IMAGE_SIZE), ("deeplabv3_mobilenet_v3_large", 512),
              ("lraspp_mobilenet_v3_large", 512), ("deeplabv3_mobilenet_v3_large", 256),
              ("lraspp_mobilenet_v3_large", 256)]
BATCH = 4  # the papers network at 512 px holds 8 GB of activations at this batch on a CPU


def train_rate(architecture: str, image_size: int, steps: int) -> float:
    """Images/s of a first step's training on the CPU (median step), after one warm-up step."""
    from services.learning import benchmark

    setup = benchmark.make_setup(architecture, image_size=image_size, batch_size=BATCH, device="cpu",
                                 num_old=3, num_new=1, amp=False)
    times = benchmark.time_steps(benchmark.method_step(setup, "ft"), steps=steps, warmup=1, device=setup.device)
    return benchmark.summarize(times, BATCH)["images_per_s"]


def defaults(steps: int, task_images: int, task_epochs: int) -> list[dict]:
    rows = []
    for architecture, size in CANDIDATES:
        rate = train_rate(architecture, size, steps)
        rows.append({"architecture": architecture, "image_size": size, "images_per_s": round(rate, 2),
                     "task_minutes": round(task_images * task_epochs / rate / 60, 1)})
        print(f"  {architecture} at {size} px: {rate:.2f} images/s", file=sys.stderr, flush=True)
    paper = rows[0]["images_per_s"]
    for row in rows:
        row["speed_vs_paper"] = round(row["images_per_s"] / paper, 1)
    return rows


def demo(timeout_s: float) -> dict:
    """`strata run` in a fresh data dir, then `strata demo --json`, timed."""
    with tempfile.TemporaryDirectory(prefix="strata-bench-quickstart-") as tmp:
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRATA_")},
               "STRATA_DATA_DIR": str(Path(tmp) / "var"), "STRATA_PORT": str(port), "PYTHONPATH": str(ROOT)}
        log = Path(tmp) / "run.log"
        started = time.monotonic()
        with open(log, "wb") as out:
            server = subprocess.Popen([sys.executable, "-m", "services.cli.main", "run"], cwd=tmp, env=env,
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=2) as client:
                wait_healthy(client, server, log, timeout=180)
            ready_s = time.monotonic() - started
            began = time.monotonic()
            # Run from the data dir's parent, as a user runs it beside `make run`: the admin key comes from var/.
            result = subprocess.run([sys.executable, "-m", "services.cli.main", "demo", "--json"], cwd=tmp,
                                    env={**env, "STRATA_URL": url}, capture_output=True, text=True, timeout=timeout_s)
            seconds = time.monotonic() - began
            if result.returncode != 0:
                raise RuntimeError(f"strata demo exited {result.returncode}: {result.stderr[-3000:]}")
        finally:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(60)
    answer = json.loads(result.stdout)
    versions = [{"version": v["version"], "method": v["method"], **{k: _points(v["miou"][k]) for k in ("old", "new", "all")}}
                for v in answer["versions"]]
    ious = {c["name"]: (_points(c["iou_a"]), _points(c["iou_b"])) for c in answer["compare"]["classes"]}
    return {"service_ready_s": round(ready_s, 1), "demo_s": round(seconds, 1), "versions": versions, "iou": ious}


def _points(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per network (default 3)")
    parser.add_argument("--task-images", type=int, default=367, help="images of the example first task (CamVid train)")
    parser.add_argument("--task-epochs", type=int, default=30, help="epochs of the example first task (the default)")
    parser.add_argument("--skip-defaults", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict = {"cpu_cores": os.cpu_count(), "default": [DEFAULT_ARCHITECTURE, DEFAULT_IMAGE_SIZE]}
    if not args.skip_defaults:
        results["defaults"] = defaults(args.steps, args.task_images, args.task_epochs)
        print(f"\nTraining a first step on {os.cpu_count()} CPU cores, batch {BATCH} (median of {args.steps} steps):\n")
        print(f"| architecture | image size | images/s | vs {PAPER_ARCHITECTURE} at {PAPER_IMAGE_SIZE} | "
              f"a {args.task_images}-image first task, {args.task_epochs} epochs |")
        print("|---|---|---|---|---|")
        for r in results["defaults"]:
            mark = " (default)" if [r["architecture"], r["image_size"]] == results["default"] else ""
            print(f"| {r['architecture']}{mark} | {r['image_size']} | {r['images_per_s']:.2f} | "
                  f"{r['speed_vs_paper']:.1f}x | {r['task_minutes']:.0f} min |")
    if not args.skip_demo:
        results["demo"] = d = demo(timeout_s=900)
        print(f"\n`strata run` answered in {d['service_ready_s']:.0f} s; `strata demo` took {d['demo_s']:.0f} s "
              f"({d['demo_s'] / 60:.1f} min) for two versions:")
        for v in d["versions"]:
            print(f"  version {v['version']} ({v['method']}): mIoU old {v['old']}, new {v['new']}, all {v['all']}")
        print("  IoU per class (v1 -> v2): " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in d["iou"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
