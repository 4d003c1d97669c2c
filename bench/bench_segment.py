"""What serving costs: POST /models/{name}/segment against the bare model on the same image.

In one run this publishes a small model (``lraspp_mobilenet_v3_large`` from random initialisation,
saved with ``save_model`` and recorded as version 1 of a model named "bench" in a temporary embedded
data dir), serves the API with uvicorn in a subprocess on a free port, and measures:
  (a) latency: segmenting p50/p95 over N sequential requests against the bare forward on the same
      decoded image (``eval_preprocess`` + ``predict_logits`` at the input's resolution + argmax,
      in this process): aim p50 <= 1.2x;
  (b) throughput: 16 concurrent clients (threads, one httpx client each) against the bare batched
      forward at batch size 16 (the server's max batch is set to the number of clients): aim >= 0.8x.
Bare and served measurements alternate (per request for latency, per round for throughput), so
drifting machine load hits both alike. The mean batch size the server formed is read from /metrics.
With --device cuda both run on the GPU (the bare forward as the server's predictor runs it there:
channels_last under bf16 autocast, the masks back on the CPU); --arch publishes another network.

    python bench/bench_segment.py                          # 256 px shorter side, 480x360 JPEG input
    python bench/bench_segment.py --image-size 128 --requests 100 --json results.json
    python bench/bench_segment.py --device cuda --arch deeplabv3_resnet101 --image-size 512   # on a GPU
    OMP_NUM_THREADS=1 python bench/bench_segment.py    # thread count: the API subprocess inherits it
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_ingest import stop_api  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from services.cli.processes import api_command  # noqa: E402
from services.cli.run import prepare  # noqa: E402
from services.config import Settings, load_settings, settings_env  # noqa: E402
from services.data.transforms import eval_preprocess  # noqa: E402
from services.db.models import SemanticClass, Task  # noqa: E402
from services.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from services.evaluation.predict import predict_logits  # noqa: E402
from services.learning.checkpoint import load_model, save_model  # noqa: E402
from services.learning.names import ARCHITECTURES, SMALL_ARCHITECTURE  # noqa: E402
from services.learning.trainer import autocast_dtype, resolve_device  # noqa: E402
from services.learning.zoo import SegModel, build_model  # noqa: E402
from services.registry.aliases import promote  # noqa: E402
from services.registry.models import create_model  # noqa: E402
from services.registry.versions import record_version  # noqa: E402
from services.storage import open_store  # noqa: E402
from services.storage.keys import checkpoint_key  # noqa: E402

ARCH = SMALL_ARCHITECTURE
CLASSES = {0: "background", 1: "road", 2: "car", 3: "person"}
MODEL = "bench"


# --- the published model ------------------------------------------------------------------------
def publish_model(settings: Settings, image_size: int, workdir: Path, arch: str = ARCH) -> tuple[Path, str]:
    """Save a random-init model, upload it and record it as production version 1 of model MODEL,
    with an infer key.

    Returns (the local model file, the infer key).
    """
    from services.auth import create_key

    torch.manual_seed(0)
    model = build_model(arch, len(CLASSES))
    path = workdir / "model.pt"
    digest = save_model(path, model, CLASSES, {"bench": True})
    engine = make_engine(settings)
    try:
        with session_scope(make_session_factory(engine)) as s:
            row = create_model(s, MODEL, "serving benchmark")
            row.architecture = arch
            key = checkpoint_key(row.id, 1, digest)
            info = open_store(settings).put_file(key, path)
            s.add(Task(id="bench", model_id=row.id, spec={"classes": [n for i, n in CLASSES.items() if i],
                                                          "architecture": arch}))
            s.flush()
            s.add_all(SemanticClass(model_id=row.id, id=i, name=n, task_id="bench" if i else None)
                      for i, n in CLASSES.items())
            s.flush()
            record_version(
                s, task=s.get(Task, "bench"), parent_version=None, architecture=arch, method="ft",
                hyperparameters={"image_size": image_size}, class_map=CLASSES, checkpoint_key=key,
                checkpoint_sha256=digest, checkpoint_bytes=info.size, metrics={}, old_classes=[],
                new_classes=sorted(CLASSES), version=1, settings=settings,
            )
            promote(s, row.id, 1)
            _, key = create_key(s, "bench", ["infer"], [row])
    finally:
        engine.dispose()
    return path, key


def street_scene(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A synthetic street-like scene: sky, road, a dozen coloured boxes."""
    im = Image.new("RGB", (width, height), (120, 160, 210))
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, height * 0.6, width, height], fill=(90, 90, 90))
    for _ in range(12):
        x, y = rng.integers(0, width), rng.integers(int(height * 0.4), height)
        w, h = rng.integers(20, width // 4), rng.integers(10, height // 5)
        draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return im


def test_image(width: int, height: int) -> tuple[Image.Image, bytes]:
    """A synthetic street-like scene as JPEG bytes, and its decoded image (what the server sees)."""
    im = street_scene(width, height, np.random.default_rng(0))
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=90)
    data = out.getvalue()
    return Image.open(io.BytesIO(data)).convert("RGB"), data


# --- the bare model -------------------------------------------------------------------------------
@dataclass
class Bare:
    model: SegModel
    image_size: int
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        # As the server's predictor runs a model on CUDA: channels_last, under bf16 (or fp16) autocast.
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.amp_dtype = autocast_dtype(self.device, amp=True)
        self.model = self.model.eval().to(self.device, memory_format=self.memory_format)

    def __call__(self, images: list[Image.Image]) -> list[torch.Tensor]:
        """What the server computes, without the serving: eval_preprocess (shorter side at
        image_size), predict_logits (padded forward, logits upsampled to the input's resolution),
        argmax: channel indices [H, W] per image, on the CPU (where the server encodes them).
        The bench's images are all one size: one forward."""
        batch = torch.stack([eval_preprocess(im, self.image_size) for im in images]).to(self.device)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)
        with torch.inference_mode(), autocast:
            logits = predict_logits(self.model, batch, [(im.height, im.width) for im in images],
                                    memory_format=self.memory_format)
            return [one.argmax(0).cpu() for one in logits]


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


class BareThread:
    """Runs the bare forward on one dedicated thread, as the server runs its forwards on a batcher
    thread: on a busy machine, torch in the main thread (2 OpenMP threads spinning against other
    load) can be several times slower than in a worker thread, which would flatter the server."""

    def __init__(self, bare: Bare) -> None:
        self.bare = bare
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bare")

    def time(self, images: list[Image.Image]) -> float:
        return self.pool.submit(timed, self.bare, images).result()

    def close(self) -> None:
        self.pool.shutdown()


# --- the served API ---------------------------------------------------------------------------------
def start_api(settings: Settings, log_path: Path) -> subprocess.Popen:
    # ROOT first, and whatever PYTHONPATH already held after it (e.g. packages installed with --target).
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": path}
    with open(log_path, "wb") as log:
        return subprocess.Popen(api_command(settings), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_until_serving(base: str, proc: subprocess.Popen, log_path: Path, timeout: float = 180,
                       model: str = MODEL) -> None:
    """Until /readyz says ``model``'s production version is serving (raises with the log's tail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200 and r.json()["models"].get(model, "").startswith("serving"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not serve {model} within {timeout} s:\n{log_path.read_text()[-3000:]}")


def segment(client: httpx.Client, data: bytes) -> None:
    r = client.post(f"/models/{MODEL}/segment", files={"image": ("scene.jpg", data, "image/jpeg")})
    if r.status_code != 200:
        raise RuntimeError(f"/models/{MODEL}/segment answered {r.status_code}: {r.text[:500]}")


def batch_sizes(base: str) -> tuple[float, float]:
    """(sum, count) of the strata_inference_batch_size histogram of model MODEL."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        for name in ("strata_inference_batch_size_sum", "strata_inference_batch_size_count"):
            if line.startswith(f'{name}{{model="{MODEL}"}} '):
                values[name] = float(line.split()[-1])
    return values.get("strata_inference_batch_size_sum", 0.0), values.get("strata_inference_batch_size_count", 0.0)


def served_throughput(base: str, headers: dict, data: bytes, clients: int, seconds: float) -> float:
    """Requests per second from ``clients`` threads sending back to back for ``seconds``."""
    counts = [0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
            segment(c, data)  # connection up before the clock starts
            start.wait()
            try:
                while time.perf_counter() < stop_at[0]:
                    segment(c, data)
                    counts[i] += 1
            except BaseException as err:  # reported after the round
                errors.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 1e9
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed; first: {errors[0]}")
    return sum(counts) / elapsed


# --- the run ------------------------------------------------------------------------------------------
def run(image_size: int = 256, input_size: tuple[int, int] = (480, 360), requests: int = 60, clients: int = 16,
        rounds: int = 3, seconds: float = 8.0, max_wait_ms: float = 5.0, device: str = "cpu",
        arch: str = ARCH) -> dict:
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        settings = load_settings(data_dir=workdir / "var", port=port, log_level="warning", inference_device=str(dev),
                                 inference_max_batch=clients, inference_max_wait_ms=max_wait_ms)
        prepare(settings)
        model_path, key = publish_model(settings, image_size, workdir, arch)
        image, data = test_image(*input_size)
        bare = BareThread(Bare(load_model(model_path).model, image_size, dev))
        base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        log_path = workdir / "api.log"
        proc = start_api(settings, log_path)
        try:
            wait_until_serving(base, proc, log_path)
            with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
                for _ in range(5):  # warm both paths
                    segment(c, data)
                    bare.time([image])
                bare_ms, served_ms = [], []
                for _ in range(requests):  # interleaved: the same machine load for both
                    bare_ms.append(1000 * bare.time([image]))
                    served_ms.append(1000 * timed(segment, c, data))
            bare_ips, served_rps = [], []
            batch_sum, batch_count = batch_sizes(base)
            for _ in range(rounds):
                per_batch = [bare.time([image] * clients) for _ in range(3)]
                bare_ips.append(clients / statistics.median(per_batch))
                served_rps.append(served_throughput(base, headers, data, clients, seconds))
            after_sum, after_count = batch_sizes(base)
        finally:
            bare.close()
            stop_api(proc)
    return report(image_size, input_size, requests, clients, rounds, seconds, max_wait_ms, bare_ms, served_ms,
                  bare_ips, served_rps, (after_sum - batch_sum) / max(after_count - batch_count, 1), str(dev), arch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def report(image_size, input_size, requests, clients, rounds, seconds, max_wait_ms, bare_ms, served_ms, bare_ips,
           served_rps, mean_batch, device="cpu", arch=ARCH) -> dict:
    latency = {
        "bare_ms": {"p50": round(pct(bare_ms, 50), 2), "p95": round(pct(bare_ms, 95), 2)},
        "segment_ms": {"p50": round(pct(served_ms, 50), 2), "p95": round(pct(served_ms, 95), 2)},
    }
    latency["ratio_p50"] = round(latency["segment_ms"]["p50"] / latency["bare_ms"]["p50"], 3)
    latency["ratio_p95"] = round(latency["segment_ms"]["p95"] / latency["bare_ms"]["p95"], 3)
    throughput = {
        "bare_images_per_s": round(statistics.median(bare_ips), 2),
        "segment_requests_per_s": round(statistics.median(served_rps), 2),
        "mean_server_batch": round(mean_batch, 2),
    }
    throughput["ratio"] = round(throughput["segment_requests_per_s"] / throughput["bare_images_per_s"], 3)
    return {
        "model": arch, "device": device, "cpu_threads": torch.get_num_threads(), "image_size": image_size,
        "input": f"{input_size[0]}x{input_size[1]} JPEG", "requests": requests, "clients": clients,
        "rounds": rounds, "seconds_per_round": seconds, "max_wait_ms": max_wait_ms,
        "latency": latency, "throughput": throughput,
        "aims": {"latency_ratio_p50_max": 1.2, "throughput_ratio_min": 0.8,
                 "latency_met": latency["ratio_p50"] <= 1.2, "throughput_met": throughput["ratio"] >= 0.8},
    }


def print_table(r: dict) -> None:
    lat, thr = r["latency"], r["throughput"]
    print(f"{r['model']} at {r['image_size']} px on {r['device']} ({r['cpu_threads']} threads), input {r['input']}")
    print(f"{'measure':<34}{'bare':>12}{'/segment':>12}{'ratio':>8}  aim")
    print(f"{'latency p50 (ms)':<34}{lat['bare_ms']['p50']:>12}{lat['segment_ms']['p50']:>12}"
          f"{lat['ratio_p50']:>8}  <= 1.2")
    print(f"{'latency p95 (ms)':<34}{lat['bare_ms']['p95']:>12}{lat['segment_ms']['p95']:>12}{lat['ratio_p95']:>8}")
    print(f"{'throughput, %d clients (img/s)' % r['clients']:<34}{thr['bare_images_per_s']:>12}"
          f"{thr['segment_requests_per_s']:>12}{thr['ratio']:>8}  >= 0.8")
    print(f"mean batch formed by the server: {thr['mean_server_batch']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=256, help="the model's shorter side (px)")
    p.add_argument("--input", default="480x360", help="the uploaded image's WIDTHxHEIGHT")
    p.add_argument("--requests", type=int, default=60, help="sequential requests for the latency figures")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (and the server's max batch)")
    p.add_argument("--rounds", type=int, default=3, help="alternating bare/served throughput rounds")
    p.add_argument("--seconds", type=float, default=8.0, help="length of one served throughput round")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the batcher's STRATA_INFERENCE_MAX_WAIT_MS")
    p.add_argument("--device", default="cpu", help="where the server and the bare forward run: cpu, cuda, cuda:N")
    p.add_argument("--arch", choices=ARCHITECTURES, default=ARCH, help="the published model's architecture")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    try:
        width, height = (int(v) for v in args.input.lower().split("x"))
    except ValueError:
        p.error(f"--input must be WIDTHxHEIGHT, e.g. 480x360, got {args.input!r}")
    try:
        resolve_device(args.device)
    except (ValueError, RuntimeError) as err:
        p.error(f"--device: {err}")
    result = run(args.image_size, (width, height), args.requests, args.clients, args.rounds, args.seconds,
                 args.max_wait_ms, args.device, args.arch)
    print_table(result)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
