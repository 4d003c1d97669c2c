"""Time to a new version: POST /tasks to a recorded version, phase by phase, against a bare loop.

For each configuration of the training data path (``--configs``: loader workers x decoded-image
cache), in one run, this:
  (a) bare: trains the same network (random init, seed 0) for the same epochs and batch on the
      task's training images already decoded, resized and cropped in memory (a fixed crop per image,
      no augmentation): plain cross-entropy and SGD, nothing else -- the least any service can do;
  (b) Strata: `strata run` (API + one worker, embedded database, broker and store, as `make run`
      starts it) in a fresh data dir with the configuration's settings; a warm-up task (so the
      worker has imported torch), then the task: POST (the client's time: upload + ingest), then
      polls every 0.2 s until its version is recorded. The phases come from the task's
      ``timings`` (queue wait, data fetch and decoding, training, scoring, checkpoint upload,
      recording).
Each configuration's round runs bare, Strata, bare (machine drift hits both sides); the ratio is
Strata's time to version over the mean of its round's two bare loops (their spread is printed). Data: the first ``--images`` of
CamVid train (masks in local index form), or synthetic shapes with ``--synthetic`` / without CamVid.

    python bench/bench_time_to_version.py                                   # 128 images, 3 epochs
    python bench/bench_time_to_version.py --configs 0:off,1:off,0:on,1:on --json r.json
    python bench/bench_time_to_version.py --images 367 --epochs 5           # all of CamVid train
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
import numpy as np  # noqa: E402
from bench_ingest import free_port, wait_healthy  # noqa: E402
from PIL import Image  # noqa: E402

from services.client import Strata  # noqa: E402
from services.labels import IGNORE_INDEX  # noqa: E402

CAMVID = ROOT.parent / "shared" / "datasets" / "camvid"
PHASES = ("ingest_s", "queued_s", "fetch_s", "train_s", "score_s", "upload_s", "record_s")
POLL_S = 0.2


# --- the data ---------------------------------------------------------------------------------------
def write_upload(out: Path, count: int, synthetic: bool) -> tuple[Path, list[str]]:
    """images/ + masks/ (local index form: value k = the k-th class, 0 background, 255 ignore) and the class names."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir(parents=True)
    if not synthetic:
        names = [json.loads((CAMVID / "classes.json").read_text())[str(i)] for i in range(11)]
        lut = np.array([v + 1 if v < len(names) else IGNORE_INDEX for v in range(256)], np.uint8)
        images = sorted((CAMVID / "train" / "images").glob("*.jpg"))[:count]
        for image in images:
            (out / "images" / image.name).write_bytes(image.read_bytes())
            mask = np.asarray(Image.open(CAMVID / "train" / "masks" / f"{image.stem}.png"))
            Image.fromarray(lut[mask]).save(out / "masks" / f"{image.stem}.png")
        return out, names
    from services.data.synthetic import SHAPES, draw_shapes_image

    rng = np.random.default_rng(0)
    for i in range(count):
        image, mask = draw_shapes_image(360, [1, 2, 3], rng)
        image.save(out / "images" / f"{i:04d}.jpg", quality=90)
        mask.save(out / "masks" / f"{i:04d}.png")
    return out, list(SHAPES[:3])


def decoded(folder: Path, stems: list[str], size: int) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    """The images resized (shorter side ``size``) and centre-cropped to size x size, normalised,
    with their masks shifted to channels (local index form is already the model's channels here)."""
    import torch

    from services.data.transforms import image_to_tensor, mask_to_tensor, normalize, scaled_hw

    images, masks = [], []
    for stem in stems:
        image = Image.open(next((folder / "images").glob(f"{stem}.*"))).convert("RGB")
        mask = Image.open(folder / "masks" / f"{stem}.png")
        h, w = scaled_hw(image.height, image.width, size)
        image, mask = image.resize((w, h), Image.BILINEAR), mask.resize((w, h), Image.NEAREST)
        top, left = (h - size) // 2, (w - size) // 2
        box = (left, top, left + size, top + size)
        images.append(normalize(image_to_tensor(image.crop(box))))
        masks.append(mask_to_tensor(mask.crop(box)))
    return torch.stack(images), torch.stack(masks)


# --- (a) the bare loop ------------------------------------------------------------------------------
def bare(images, masks, num_classes: int, architecture: str, epochs: int, batch: int, lr: float) -> float:
    """Seconds to train ``epochs`` over the decoded tensors: model, cross-entropy, SGD; nothing else."""
    import torch
    import torch.nn.functional as F

    from services.learning.zoo import build_model

    torch.manual_seed(0)
    began = time.perf_counter()
    model = build_model(architecture, num_classes, pretrained_backbone=False).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    steps = len(images) // batch
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps):
            pick = order[step * batch:(step + 1) * batch]
            loss = F.cross_entropy(model(images[pick]).logits, masks[pick], ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - began


# --- (b) Strata ----------------------------------------------------------------------------------
class Service:
    """`strata run` in its own data dir, with extra settings; stopped with SIGINT like Ctrl-C."""

    def __init__(self, workdir: Path, settings: dict[str, str]) -> None:
        self.workdir, self.port = workdir, free_port()
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}, **settings,
                    "STRATA_DATA_DIR": str(workdir / "var"), "STRATA_PORT": str(self.port),
                    "PYTHONPATH": str(ROOT)}
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Strata:
        self.workdir.mkdir(parents=True)
        self.log = self.workdir / "run.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "run"], cwd=self.workdir,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        with httpx.Client(base_url=self.url, timeout=2) as client:
            wait_healthy(client, self.proc, self.log, timeout=180)
        key = next(line.split("=", 1)[1].strip() for line in (self.workdir / "var" / "api-keys.txt").read_text().splitlines()
                   if line.startswith("STRATA_ADMIN_KEY="))
        self.client = Strata(self.url, key, timeout=600)
        return self.client

    def __exit__(self, *_: object) -> None:
        self.client.close()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def time_to_version(client: Strata, model: str, upload: Path, spec: dict) -> dict:
    """POST the task, poll until it ends; the client's times and the task's own phases."""
    client.create_model(model)
    began = time.monotonic()
    task = client.submit(model, upload, spec)
    posted = time.monotonic() - began
    while not task.finished:
        time.sleep(POLL_S)
        task = client.task(task.id)
    seconds = time.monotonic() - began
    if task.status != "succeeded":
        raise RuntimeError(f"task {task.id} {task.status}: {task.error}")
    return {"post_s": round(posted, 2), "to_version_s": round(seconds, 2), **(task.timings or {})}


def warm_up(client: Strata, upload: Path, names: list[str], architecture: str) -> None:
    """One tiny task (synthetic shapes), so the worker's process has imported torch and built a network once."""
    time_to_version(client, "warm-up", upload, {
        "classes": names, "epochs": 1, "batch_size": 2, "image_size": 64, "architecture": architecture,
        "val_fraction": 0.25, "hyperparameters": {"pretrained_backbone": False}})


# --- the run --------------------------------------------------------------------------------------
def parse_configs(text: str) -> list[tuple[int, bool]]:
    configs = []
    for part in text.split(","):
        workers, _, cache = part.strip().partition(":")
        if not workers.isdigit() or cache not in ("on", "off"):
            raise SystemExit(f"--configs: {part!r} must be WORKERS:on|off, e.g. 1:on")
        configs.append((int(workers), cache == "on"))
    return configs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=128, help="images uploaded (default 128; CamVid train has 367)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--architecture", default="lraspp_mobilenet_v3_large")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--configs", default="0:off,1:off,0:on,1:on",
                   help="WORKERS:CACHE pairs, STRATA_TRAIN_LOADER_WORKERS and the decoded-image cache "
                        "(default 0:off,1:off,0:on,1:on; 0:off is the data path before issue 14)")
    p.add_argument("--synthetic", action="store_true", help="synthetic shapes instead of CamVid")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    configs = parse_configs(args.configs)
    synthetic = args.synthetic or not (CAMVID / "train").is_dir()
    spec = {"epochs": args.epochs, "batch_size": args.batch_size, "image_size": args.image_size,
            "architecture": args.architecture, "val_fraction": 0.1,
            "hyperparameters": {"pretrained_backbone": False, "lr": args.lr, "seed": 0}}
    results = {"cpu_cores": os.cpu_count(), "data": "synthetic" if synthetic else "camvid", "images": args.images,
               "epochs": args.epochs, "batch_size": args.batch_size, "image_size": args.image_size,
               "architecture": args.architecture, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="strata-bench-ttv-") as tmp:
        work = Path(tmp)
        upload, names = write_upload(work / "upload", args.images, synthetic)
        small, small_names = write_upload(work / "small", 8, synthetic=True)
        spec["classes"] = names
        from services.jobs.registration import validation_stems

        stems = sorted(path.stem for path in (upload / "images").iterdir())

        def bare_run(task_id: str) -> tuple[float, int]:
            """The bare loop on the training images of a task with this id (its validation stems
            are drawn from it; their number is the same for any id), while no service runs."""
            val = validation_stems(stems, task_id, spec["val_fraction"])
            images, masks = decoded(upload, [s for s in stems if s not in val], args.image_size)
            seconds = bare(images, masks, len(names) + 1, args.architecture, args.epochs, args.batch_size, args.lr)
            return seconds, len(images)

        for n, (workers, cache) in enumerate(configs):
            label = f"workers {workers}, cache {'on' if cache else 'off'}"
            settings = {"STRATA_TRAIN_LOADER_WORKERS": str(workers), "STRATA_TRAIN_CACHE_MB": "2048" if cache else "0"}
            before, _ = bare_run(f"bench-{n}")  # bare, Strata, bare: drift hits both sides alike
            with Service(work / f"run{n}", settings) as client:
                warm_up(client, small, small_names, args.architecture)
                strata = time_to_version(client, "bench", upload, spec)
                task = client.tasks("bench")[0]
            after, n_train = bare_run(task.id)
            bare_s = (before + after) / 2
            row = {"workers": workers, "cache": cache, "bare_s": round(bare_s, 2),
                   "bare_spread": round(abs(before - after) / bare_s, 3), **strata,
                   "train_images": n_train, "ratio": round(strata["to_version_s"] / bare_s, 3),
                   "train_ratio": round(strata["train_s"] / bare_s, 3)}
            results["rounds"].append(row)
            print(f"  {label}: {row['to_version_s']:.1f} s to version, bare {bare_s:.1f} s, ratio {row['ratio']:.2f}",
                  file=sys.stderr, flush=True)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def print_table(results: dict) -> None:
    print(f"\n{results['architecture']} at {results['image_size']} px, batch {results['batch_size']}, "
          f"{results['epochs']} epochs, {results['images']} {results['data']} images, {results['cpu_cores']} cores\n")
    print("| loader workers | cache | bare loop (spread) | time to version | ratio | " + " | ".join(PHASES)
          + " | train / bare |")
    print("|---|---|---|---|---|" + "---|" * len(PHASES) + "---|")
    for r in results["rounds"]:
        phases = " | ".join("-" if r.get(k) is None else f"{r[k]:.1f}" for k in PHASES)
        print(f"| {r['workers']} | {'on' if r['cache'] else 'off'} | {r['bare_s']:.1f} s ({100 * r['bare_spread']:.0f} %) | "
              f"{r['to_version_s']:.1f} s | "
              f"{r['ratio']:.2f} | {phases} | {r['train_ratio']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
