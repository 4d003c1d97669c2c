"""What several models in one service cost and gain, against the same work done one model at a time.

In one run (a temporary embedded data dir, the API in a uvicorn subprocess, real Celery workers):
  (a) training: two models each get one task (a CamVid subset: model "north" learns Sky + Building,
      "south" learns Road + Tree; or synthetic shapes with ``--synthetic`` or without CamVid), first
      served by ONE worker (the tasks run one after the other), then, in a fresh data dir, by TWO
      workers (they may run side by side). Reported: wall time from the first upload to the last
      version, the ratio two / one, and how much the two models' training overlapped. On one GPU per
      worker the ratio tends to 1 / 2; on a CPU the two trainings share the cores, so the ratio says
      what the parallelism costs or gains on this machine.
  (b) serving: both models' production versions answering requests that alternate between the
      models, with ``STRATA_INFERENCE_MAX_LOADED=2`` (both stay loaded) against ``=1`` (every
      switch evicts one and loads the other again): p50 latency and the ratio, the price of a
      budget smaller than the models in use.

    python bench/bench_models.py                      # CamVid train split, 24 images per model
    python bench/bench_models.py --synthetic --json r.json
    python bench/bench_models.py --images 48 --epochs 3 --image-size 96 --worker-threads 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from bench_ingest import free_port, start_api, wait_healthy  # noqa: E402
from PIL import Image  # noqa: E402

from services.cli.processes import worker_command  # noqa: E402
from services.cli.run import prepare  # noqa: E402
from services.config import Settings, load_settings, settings_env  # noqa: E402
from services.data.synthetic import write_shapes_dataset  # noqa: E402
from services.labels import IGNORE_INDEX  # noqa: E402

CAMVID = ROOT.parent / "shared" / "datasets" / "camvid"
# model -> the CamVid class values its task learns (CamVid's own index order)
CAMVID_TASKS = {"north": {0: "Sky", 1: "Building"}, "south": {3: "Road", 5: "Tree"}}
SYNTHETIC_TASKS = {"north": {1: "square", 2: "disc"}, "south": {2: "disc", 3: "triangle"}}


# --- the uploads -------------------------------------------------------------------------------------
def task_zip(images: list[Path], masks: list[Path], classes: dict[int, str], out: Path) -> Path:
    """A zip of the images and their masks in the task's local form: source value v of the task's
    k-th class becomes k, other labels background, 255 stays."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for local, value in enumerate(classes, start=1):
        lut[value] = local
    with zipfile.ZipFile(out, "w") as zf:
        for image, mask in zip(images, masks):
            zf.write(image, f"images/{image.name}")
            buf = io.BytesIO()
            Image.fromarray(lut[np.asarray(Image.open(mask))]).save(buf, format="PNG")
            zf.writestr(f"masks/{mask.stem}.png", buf.getvalue())
    return out


def build_uploads(work: Path, camvid: Path | None, count: int) -> tuple[dict[str, tuple[Path, list[str]]], str]:
    """{model: (zip, class names)} and where the images came from."""
    if camvid is not None:
        images = sorted((camvid / "images").glob("*"))
        tasks, source = CAMVID_TASKS, f"CamVid {camvid.name}"
        chosen = {m: images[i * count:(i + 1) * count] for i, m in enumerate(tasks)}
        masks = {m: [camvid / "masks" / f"{p.stem}.png" for p in chosen[m]] for m in tasks}
    else:
        tasks, source, chosen, masks = SYNTHETIC_TASKS, "synthetic shapes", {}, {}
        for i, (m, classes) in enumerate(tasks.items()):
            root = write_shapes_dataset(work / f"shapes-{m}", {"train": count}, size=64, num_shapes=3,
                                        compositions={"train": [list(classes)]}, seed=i)
            chosen[m] = sorted((root / "train" / "images").iterdir())
            masks[m] = [root / "train" / "masks" / p.name for p in chosen[m]]
    uploads = {m: (task_zip(chosen[m], masks[m], classes, work / f"{m}.zip"), list(classes.values()))
               for m, classes in tasks.items()}
    return uploads, source


# --- processes ------------------------------------------------------------------------------------------
def start_workers(settings: Settings, n: int, log: Path) -> list[subprocess.Popen]:
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT)}
    procs = []
    for i in range(n):
        command = [a.replace("strata-training@", f"strata-training-{i}@") for a in worker_command(settings)]
        with open(log, "ab") as out:
            procs.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each (a worker's whole group: the Celery parent and its pool child); SIGKILL stragglers."""
    for p in procs:
        if p.poll() is None:
            _signal(p, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            p.wait()


def _signal(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig) if os.getpgid(p.pid) == p.pid else p.send_signal(sig)
    except ProcessLookupError:
        pass


class Service:
    """The API subprocess (and ``workers`` worker processes) on an embedded data dir."""

    def __init__(self, data_dir: Path, keys: dict[str, str], *, workers: int, max_loaded: int = 4,
                 worker_threads: int | None = None) -> None:
        self.settings = load_settings(data_dir=data_dir, port=free_port(), log_level="warning",
                                      admin_key=keys["admin"], infer_key=keys["infer"],
                                      inference_max_loaded=max_loaded, worker_threads=worker_threads)
        self.keys, self.workers, self.logs = keys, workers, data_dir.parent

    def __enter__(self) -> httpx.Client:
        prepare(self.settings)
        self.procs = [start_api(self.settings, self.logs / "api.log")]
        self.procs += start_workers(self.settings, self.workers, self.logs / "workers.log")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.settings.port}", timeout=600,
                                   headers={"Authorization": f"Bearer {self.keys['admin']}"})
        wait_healthy(self.client, self.procs[0], self.logs / "api.log")
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        stop(self.procs)


# --- (a) training ------------------------------------------------------------------------------------------
def train_models(client: httpx.Client, uploads: dict, spec: dict, timeout_s: float) -> dict:
    started = time.perf_counter()
    ids = {}
    for model, (archive, classes) in uploads.items():
        client.post("/models", json={"name": model}).raise_for_status()
        with open(archive, "rb") as f:
            r = client.post(f"/models/{model}/tasks", data={"spec": json.dumps({**spec, "classes": classes})},
                            files={"archive": (archive.name, f, "application/zip")})
        if r.status_code != 202:
            raise RuntimeError(f"POST /models/{model}/tasks answered {r.status_code}: {r.text[:500]}")
        ids[model] = r.json()["id"]
    tasks = {m: wait_done(client, task_id, started + timeout_s) for m, task_id in ids.items()}
    wall = time.perf_counter() - started
    spans = [(_t(t["started_at"]), _t(t["finished_at"])) for t in tasks.values()]
    overlap = max(0.0, min(e for _, e in spans) - max(s for s, _ in spans))
    busy = sum(e - s for s, e in spans)
    miou = {m: client.get(f"/models/{m}/versions/1").json()["miou"]["all"] for m in tasks}
    return {"wall_s": round(wall, 2), "task_s": [round(e - s, 2) for s, e in spans],
            "overlap_s": round(overlap, 2), "overlap_share": round(overlap / (busy / 2), 3) if busy else 0.0,
            "miou_all": miou}


def wait_done(client: httpx.Client, task_id: str, deadline: float) -> dict:
    while time.perf_counter() < deadline:
        task = client.get(f"/tasks/{task_id}").json()
        if task["status"] in ("succeeded", "failed", "cancelled"):
            if task["status"] != "succeeded":
                raise RuntimeError(f"task {task_id} {task['status']}: {task['error']}")
            return task
        time.sleep(0.5)
    raise RuntimeError(f"task {task_id} did not finish in time")


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- (b) serving ----------------------------------------------------------------------------------------
def alternating_latency(client: httpx.Client, infer_key: str, models: list[str], image: bytes, requests: int) -> dict:
    headers = {"Authorization": f"Bearer {infer_key}"}
    for m in models:  # warm: both loaded once
        client.post(f"/models/{m}/segment", headers=headers, files={"image": ("x.png", image, "image/png")})
    times = []
    for i in range(requests):
        m = models[i % len(models)]
        started = time.perf_counter()
        r = client.post(f"/models/{m}/segment", headers=headers, files={"image": ("x.png", image, "image/png")})
        times.append(time.perf_counter() - started)
        if r.status_code != 200 or r.json()["model"] != m:
            raise RuntimeError(f"segmenting with {m} answered {r.status_code}: {r.text[:300]}")
    times.sort()
    return {"p50_ms": round(1000 * statistics.median(times), 1),
            "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 1)}


def run(args: argparse.Namespace) -> dict:
    camvid = None if args.synthetic or not (args.data / "images").is_dir() else args.data
    spec = {"epochs": args.epochs, "image_size": args.image_size, "batch_size": 4, "val_fraction": 0.25,
            "architecture": "lraspp_mobilenet_v3_large",
            "hyperparameters": {"seed": 0, "pretrained_backbone": False}}
    keys = {"admin": "strata_" + secrets.token_urlsafe(32), "infer": "strata_" + secrets.token_urlsafe(32)}
    result: dict = {"images_per_model": args.images, "epochs": args.epochs, "image_size": args.image_size,
                    "worker_threads": args.worker_threads}
    with tempfile.TemporaryDirectory(prefix="strata-bench-models-") as tmp:
        work = Path(tmp)
        uploads, result["data"] = build_uploads(work, camvid, args.images)
        for workers in (1, 2):
            (work / f"workers-{workers}").mkdir()
            with Service(work / f"workers-{workers}" / "var", keys, workers=workers,
                         worker_threads=args.worker_threads) as client:
                result[f"workers_{workers}"] = train_models(client, uploads, spec, args.timeout)
        result["training_ratio_two_over_one"] = round(
            result["workers_2"]["wall_s"] / result["workers_1"]["wall_s"], 3)
        image = sample_png(uploads)
        for budget in (2, 1):  # the two models trained above, served with room for both, then for one
            with Service(work / "workers-2" / "var", keys, workers=0, max_loaded=budget) as client:
                result[f"serving_max_loaded_{budget}"] = alternating_latency(client, keys["infer"], list(uploads),
                                                                             image, args.requests)
        result["serving_ratio_budget_1_over_2"] = round(
            result["serving_max_loaded_1"]["p50_ms"] / result["serving_max_loaded_2"]["p50_ms"], 2)
    return result


def sample_png(uploads: dict) -> bytes:
    archive = next(iter(uploads.values()))[0]
    with zipfile.ZipFile(archive) as zf:
        name = next(n for n in zf.namelist() if n.startswith("images/"))
        image = Image.open(io.BytesIO(zf.read(name))).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def print_table(r: dict) -> None:
    one, two = r["workers_1"], r["workers_2"]
    print(f"two models, one task each ({r['data']}, {r['images_per_model']} images, {r['epochs']} epochs, "
          f"{r['image_size']} px, STRATA_WORKER_THREADS={r['worker_threads'] or 'unset'}):")
    print(f"  {'':<36}{'1 worker':>12}{'2 workers':>12}")
    print(f"  {'wall time, first upload to last version (s)':<36}{one['wall_s']:>12}{two['wall_s']:>12}")
    print(f"  {'overlap of the two trainings (s)':<36}{one['overlap_s']:>12}{two['overlap_s']:>12}")
    print(f"  two workers / one worker: {r['training_ratio_two_over_one']}")
    b2, b1 = r["serving_max_loaded_2"], r["serving_max_loaded_1"]
    print("requests alternating between the two models:")
    print(f"  STRATA_INFERENCE_MAX_LOADED=2: p50 {b2['p50_ms']} ms, p95 {b2['p95_ms']} ms")
    print(f"  STRATA_INFERENCE_MAX_LOADED=1: p50 {b1['p50_ms']} ms, p95 {b1['p95_ms']} ms "
          f"(x{r['serving_ratio_budget_1_over_2']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=CAMVID / "train", help="a CamVid split: images/, masks/")
    p.add_argument("--synthetic", action="store_true", help="synthetic shapes instead of CamVid")
    p.add_argument("--images", type=int, default=24, help="images per model's task")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64, help="shorter side in pixels")
    p.add_argument("--requests", type=int, default=40, help="segmentation requests per budget")
    p.add_argument("--worker-threads", type=int, help="STRATA_WORKER_THREADS of the workers (default: unset)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for each training round")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.images < 4 or args.epochs < 1 or args.requests < 2 or (args.worker_threads or 1) < 1:
        p.error("--images must be at least 4, --epochs and --worker-threads at least 1, --requests at least 2")
    try:
        result = run(args)
    except (RuntimeError, ValueError, httpx.HTTPError) as err:
        print(f"bench_models: {err}", file=sys.stderr)
        return 1
    print_table(result)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
