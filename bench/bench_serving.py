"""Serving against TorchServe: Strata's POST /segment, TorchServe and the bare pipeline, in one run.

For each image size this saves one random-init LR-ASPP MobileNetV3 (seed 0) and serves that file
twice, side by side: through Strata (version 1 of model "bench" in a temporary embedded
deployment, the API under uvicorn) and through TorchServe (the same file in a .mar archived with
torch-model-archiver, the handler bench/torchserve_handler.py running the same preprocessing,
forward, argmax and PNG encoding). Both batch up to ``--max-batch`` requests and wait up to
``--max-wait-ms`` for a batch to fill; every process gets ``--threads`` CPU threads. The bare
pipeline runs in this process on one thread (the one that loaded the model): decode the JPEG,
preprocess, forward, argmax, PNG. First the masks: Strata's and TorchServe's PNGs must equal the
bare pipeline's, pixel for pixel. Then, alternating so that drifting machine load hits all three:
  (a) one client: latency p50/p95 over ``--requests`` sequential requests (bare, Strata, TorchServe
      in turn, request by request);
  (b) ``--clients`` concurrent clients (threads, one httpx client each) for ``--seconds``, against
      the bare pipeline's best images/s (batch 1 or ``--max-batch``), round by round.
Ratios: Strata/bare, TorchServe/bare, Strata/TorchServe. TorchServe is stopped at exit whatever
happens (its process group is killed, on errors, Ctrl-C and SIGTERM too).

    python bench/bench_serving.py                                  # 128 and 256 px, a CamVid val JPEG
    python bench/bench_serving.py --image-size 128 --rounds 3 --json serving.json
    python bench/bench_serving.py --no-torchserve                  # Strata against bare only

TorchServe and its archiver come from the `bench` extra (`pip install -e '.[bench]'`); it needs Java 17+.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_export import CAMVID  # noqa: E402
from bench_ingest import stop_api  # noqa: E402
from bench_segment import (  # noqa: E402
    ARCH,
    MODEL,
    free_port,
    pct,
    publish_model,
    start_api,
    street_scene,
    timed,
    wait_until_serving,
)
from PIL import Image  # noqa: E402

from services.cli.run import prepare  # noqa: E402
from services.config import load_settings  # noqa: E402
from services.data.transforms import eval_preprocess  # noqa: E402
from services.evaluation.predict import predict_logits  # noqa: E402
from services.inference.images import decode_image, encode_mask_png  # noqa: E402
from services.learning.checkpoint import load_model  # noqa: E402
from services.learning.classmap import channels_of  # noqa: E402

HANDLER = Path(__file__).resolve().parent / "torchserve_handler.py"
VENV_BIN = Path(sys.executable).parent
MAX_PIXELS = 40_000_000


# --- the input -------------------------------------------------------------------------------------
def jpeg_input(path: Path | None) -> tuple[bytes, str]:
    """The JPEG every client sends: ``path``, else the first CamVid val image, else a synthetic scene."""
    if path is None:
        found = sorted((CAMVID / "val" / "images").glob("*.jpg"))
        path = found[0] if found else None
    if path is not None:
        return path.read_bytes(), f"{path.name} ({Image.open(path).size[0]}x{Image.open(path).size[1]} JPEG)"
    out = io.BytesIO()
    street_scene(480, 360, np.random.default_rng(0)).save(out, format="JPEG", quality=90)
    return out.getvalue(), "synthetic 480x360 JPEG (CamVid not found)"


# --- the bare pipeline ----------------------------------------------------------------------------------
class BarePipeline:
    """Decode, preprocess, forward, argmax, PNG, on one thread of its own that also loaded and
    warmed the model (so it runs on one OpenMP team, like TorchServe's worker and Strata's torch thread)."""

    def __init__(self, model_path: Path, image_size: int, threads: int) -> None:
        self.image_size = image_size
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bare")
        self.pool.submit(self._load, model_path, threads).result()

    def _load(self, model_path: Path, threads: int) -> None:
        torch.set_num_threads(threads)
        loaded = load_model(model_path)
        self.model, self.lut = loaded.model.eval(), torch.tensor(channels_of(loaded.class_map), dtype=torch.uint8)
        s = self.image_size
        with torch.inference_mode():
            self.model(torch.zeros(1, 3, s, s))

    def _pipeline(self, payloads: list[bytes]) -> list[bytes]:
        images = [decode_image(p, MAX_PIXELS) for p in payloads]
        batch = torch.stack([eval_preprocess(im, self.image_size) for im in images])
        with torch.inference_mode():
            logits = predict_logits(self.model, batch, [(im.height, im.width) for im in images])
            masks = [self.lut[one.argmax(0)].numpy() for one in logits]
        return [encode_mask_png(m) for m in masks]

    def run(self, payloads: list[bytes]) -> list[bytes]:
        return self.pool.submit(self._pipeline, payloads).result()

    def seconds(self, payloads: list[bytes]) -> float:
        return self.pool.submit(timed, self._pipeline, payloads).result()

    def images_per_s(self, data: bytes, batch: int, images: int) -> float:
        """Best of three passes over ``images`` copies of the input, ``batch`` at a time."""
        chunks = [[data] * min(batch, images - i) for i in range(0, images, batch)]
        return images / min(sum(self.seconds(c) for c in chunks) for _ in range(3))

    def close(self) -> None:
        self.pool.shutdown()


# --- the servers ----------------------------------------------------------------------------------------
class Server:
    """One way of segmenting over HTTP: how to post the image and where."""

    def __init__(self, name: str, base: str, path: str, post: Callable[[httpx.Client, str, bytes], httpx.Response],
                 headers: dict | None = None) -> None:
        self.name, self.base, self.path, self._post, self.headers = name, base, path, post, headers or {}

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=timeout)

    def segment(self, client: httpx.Client, data: bytes) -> bytes:
        r = self._post(client, self.path, data)
        if r.status_code != 200:
            raise RuntimeError(f"{self.name} answered {r.status_code}: {r.text[:500]}")
        return r.content


def _post_multipart(client: httpx.Client, path: str, data: bytes) -> httpx.Response:
    return client.post(path, files={"image": ("image.jpg", data, "image/jpeg")})


def _post_body(client: httpx.Client, path: str, data: bytes) -> httpx.Response:
    return client.post(path, content=data, headers={"Content-Type": "image/jpeg"})


def thread_env(threads: int) -> dict[str, str]:
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def start_strata(workdir: Path, image_size: int, max_batch: int, max_wait_ms: float,
                 threads: int) -> tuple[Server, subprocess.Popen, Path]:
    port = free_port()
    settings = load_settings(data_dir=workdir / "var", port=port, log_level="warning", inference_device="cpu",
                             inference_max_batch=max_batch, inference_max_wait_ms=max_wait_ms)
    prepare(settings)
    model_path, key = publish_model(settings, image_size, workdir)
    os.environ.update(thread_env(threads))  # start_api passes this process's environment on
    log = workdir / "api.log"
    proc = start_api(settings, log)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, proc, log)
    server = Server("strata", base, f"/models/{MODEL}/segment?format=png", _post_multipart,
                    {"Authorization": f"Bearer {key}"})
    return server, proc, model_path


class TorchServe:
    """TorchServe in the foreground, in a process group of its own, killed whole on ``stop``."""

    def __init__(self, workdir: Path, model_path: Path, image_size: int, max_batch: int, max_wait_ms: float,
                 threads: int) -> None:
        self.workdir = workdir / "torchserve"
        self.proc: subprocess.Popen | None = None
        store = self.workdir / "model-store"
        store.mkdir(parents=True)
        config = self.workdir / "model-config.yaml"
        # One worker (one Python process) batching like Strata's batcher; the handler reads image_size.
        config.write_text(f"minWorkers: 1\nmaxWorkers: 1\nbatchSize: {max_batch}\nmaxBatchDelay: {max_wait_ms:g}\n"
                          f"responseTimeout: 120\nhandler:\n  image_size: {image_size}\n")
        archived = subprocess.run(
            [str(VENV_BIN / "torch-model-archiver"), "--model-name", MODEL, "--version", "1.0",
             "--serialized-file", str(model_path), "--handler", str(HANDLER), "--config-file", str(config),
             "--export-path", str(store)], capture_output=True, text=True)
        if archived.returncode != 0:
            raise RuntimeError(f"torch-model-archiver failed ({archived.returncode}):\n"
                               f"{(archived.stdout + archived.stderr)[-3000:]}")
        self.port, management, metrics = free_port(), free_port(), free_port()
        properties = self.workdir / "config.properties"
        properties.write_text("\n".join([
            f"inference_address=http://127.0.0.1:{self.port}",
            f"management_address=http://127.0.0.1:{management}",
            f"metrics_address=http://127.0.0.1:{metrics}",
            f"number_of_netty_threads={threads}", f"netty_client_threads={threads}",
            "default_workers_per_model=1", "job_queue_size=1000", "disable_system_metrics=true",
            "install_py_dep_per_model=false", f"vmargs=-Xmx1g -XX:ActiveProcessorCount={threads}",
            # Its workers' sockets are /tmp/.ts.sock.<port> from 9000 on: another TorchServe would collide.
            f"initial_worker_port={free_port()}",
        ]) + "\n")
        env = {**os.environ, **thread_env(threads), "PYTHONPATH": str(ROOT),
               "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "LOG_LOCATION": str(self.workdir / "logs"), "METRICS_LOCATION": str(self.workdir / "logs"),
               # Its launcher refuses to start while the pid file in the temporary directory names a
               # running TorchServe: a directory of our own lets two benchmarks run at once.
               "TMPDIR": str(self.workdir)}
        self.log = self.workdir / "torchserve.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
                 "--model-store", str(store), "--ts-config", str(properties), "--models", f"{MODEL}={MODEL}.mar"],
                cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _running.append(self)
        self.server = Server("torchserve", f"http://127.0.0.1:{self.port}", f"/predictions/{MODEL}", _post_body)

    def wait_until_serving(self, data: bytes, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        with self.server.client(timeout=30) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"TorchServe exited with {self.proc.returncode}:\n{self._tail()}")
                try:
                    self.server.segment(c, data)
                    return
                except (httpx.HTTPError, RuntimeError):
                    time.sleep(0.5)
        raise RuntimeError(f"TorchServe did not answer within {timeout} s:\n{self._tail()}")

    def _tail(self) -> str:
        logs = [self.log, *sorted((self.workdir / "logs").glob("*.log"))]
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None and not _group_alive(proc.pid):
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # the launcher, Java and its Python workers: one group
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(proc.pid):
                proc.poll()
                time.sleep(0.2)
            if not _group_alive(proc.pid):
                return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


_running: list[TorchServe] = []


def _stop_all() -> None:
    while _running:
        _running.pop().stop()


def _on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks, then atexit


# --- measuring ----------------------------------------------------------------------------------------
def throughput(server: Server, data: bytes, clients: int, seconds: float) -> float:
    """Requests per second from ``clients`` threads sending back to back for ``seconds``."""
    counts = [0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    stop_at = [float("inf")]

    def client(i: int) -> None:
        with server.client() as c:
            try:
                server.segment(c, data)  # the connection is up before the clock starts
            except BaseException as err:
                errors.append(err)
            start.wait()
            try:
                while not errors and time.perf_counter() < stop_at[0]:
                    server.segment(c, data)
                    counts[i] += 1
            except BaseException as err:
                errors.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{server.name}: {len(errors)} clients failed; first: {errors[0]!r}")
    return sum(counts) / elapsed


def check_masks(reference: bytes, answers: dict[str, bytes]) -> dict[str, bool]:
    want = np.asarray(Image.open(io.BytesIO(reference)))
    return {name: bool(np.array_equal(np.asarray(Image.open(io.BytesIO(png))), want)) for name, png in answers.items()}


def measure_size(image_size: int, data: bytes, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="strata-serving-") as tmp:
        workdir = Path(tmp)
        strata, api, model_path = start_strata(workdir, image_size, args.max_batch, args.max_wait_ms, args.threads)
        ts: TorchServe | None = None
        bare = BarePipeline(model_path, image_size, args.threads)
        try:
            servers = [strata]
            if not args.no_torchserve:
                ts = TorchServe(workdir, model_path, image_size, args.max_batch, args.max_wait_ms, args.threads)
                ts.wait_until_serving(data)
                servers.append(ts.server)
            clients = {s.name: s.client() for s in servers}
            reference = bare.run([data])[0]
            masks = check_masks(reference, {s.name: s.segment(clients[s.name], data) for s in servers})
            if not all(masks.values()):
                raise RuntimeError(f"the masks differ from the bare pipeline's: {masks}")
            for _ in range(5):  # warm every path
                bare.run([data])
                for s in servers:
                    s.segment(clients[s.name], data)
            latency: dict[str, list[float]] = {"bare": [], **{s.name: [] for s in servers}}
            load_before = os.getloadavg()
            for i in range(args.requests):  # request by request, the order rotating
                order = ["bare", *[s.name for s in servers]]
                for name in order[i % len(order):] + order[:i % len(order)]:
                    if name == "bare":
                        latency[name].append(1000 * bare.seconds([data]))
                    else:
                        server = next(s for s in servers if s.name == name)
                        latency[name].append(1000 * timed(server.segment, clients[name], data))
            for c in clients.values():
                c.close()
            rates: dict[str, list[float]] = {"bare_b1": [], f"bare_b{args.max_batch}": [],
                                             **{s.name: [] for s in servers}}
            for r in range(args.rounds):  # round by round, the order rotating
                steps = [("bare", None), *[(s.name, s) for s in servers]]
                for name, server in steps[r % len(steps):] + steps[:r % len(steps)]:
                    if server is None:
                        rates["bare_b1"].append(bare.images_per_s(data, 1, args.clients))
                        rates[f"bare_b{args.max_batch}"].append(bare.images_per_s(data, args.max_batch, args.clients))
                    else:
                        rates[name].append(throughput(server, data, args.clients, args.seconds))
            load_after = os.getloadavg()
        finally:
            bare.close()
            if ts is not None:
                ts.stop()
                _running.remove(ts)
            stop_api(api)
    return summarise(image_size, latency, rates, masks, args, load_before, load_after)


def summarise(image_size: int, latency: dict, rates: dict, masks: dict, args, load_before, load_after) -> dict:
    lat = {name: {"p50": round(pct(ms, 50), 2), "p95": round(pct(ms, 95), 2)} for name, ms in latency.items()}
    per_round = {name: [round(v, 1) for v in values] for name, values in rates.items()}
    thr = {name: round(statistics.median(values), 1) for name, values in rates.items()}
    best_bare = max(thr["bare_b1"], thr[f"bare_b{args.max_batch}"])
    ratios = {"strata/bare p50": round(lat["strata"]["p50"] / lat["bare"]["p50"], 3),
              "strata/bare p95": round(lat["strata"]["p95"] / lat["bare"]["p95"], 3),
              "strata/bare throughput": round(thr["strata"] / best_bare, 3)}
    if "torchserve" in lat:
        ratios.update({
            "torchserve/bare p50": round(lat["torchserve"]["p50"] / lat["bare"]["p50"], 3),
            "torchserve/bare throughput": round(thr["torchserve"] / best_bare, 3),
            "strata/torchserve p50": round(lat["strata"]["p50"] / lat["torchserve"]["p50"], 3),
            "strata/torchserve throughput": round(thr["strata"] / thr["torchserve"], 3),
        })
    aims = {"p50 <= 1.2x bare": ratios["strata/bare p50"] <= 1.2,
            "throughput >= 0.9x best bare": ratios["strata/bare throughput"] >= 0.9}
    if "torchserve" in lat:
        aims["p50 below TorchServe's"] = ratios["strata/torchserve p50"] < 1
        aims["throughput above TorchServe's"] = ratios["strata/torchserve throughput"] > 1
    return {"image_size": image_size, "latency_ms": lat, "images_per_s": thr, "images_per_s_rounds": per_round,
            "best_bare_images_per_s": best_bare, "ratios": ratios, "aims_met": aims, "masks_identical": masks,
            "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after]}


def print_table(result: dict) -> None:
    print(f"\n{result['model']} random init, input {result['input']}, {result['threads']} threads everywhere, "
          f"batch {result['max_batch']}, {result['max_wait_ms']:g} ms delay, {result['clients']} clients")
    for r in result["sizes"]:
        lat, thr, ratios = r["latency_ms"], r["images_per_s"], r["ratios"]
        print(f"-- {r['image_size']} px (load {r['load_before'][0]} -> {r['load_after'][0]}); masks identical: "
              f"{r['masks_identical']}")
        print(f"{'':<22}{'p50 ms':>9}{'p95 ms':>9}{'img/s':>9}")
        for name in [n for n in ("bare", "strata", "torchserve") if n in lat]:
            rate = thr.get(name, r["best_bare_images_per_s"])
            print(f"{name:<22}{lat[name]['p50']:>9}{lat[name]['p95']:>9}{rate:>9}")
        print("  bare img/s by batch: " + ", ".join(f"{k} {v}" for k, v in thr.items() if k.startswith("bare")))
        for k, v in ratios.items():
            print(f"  {k:<30}{v:>7}")
        print("  aims: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["aims_met"].items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, nargs="+", default=[128, 256], help="the model's shorter side(s), px")
    p.add_argument("--image", type=Path, help="the JPEG to send (default: the first CamVid val image)")
    p.add_argument("--requests", type=int, default=60, help="sequential requests per server for the latency")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients for the throughput")
    p.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    p.add_argument("--seconds", type=float, default=8.0, help="length of one server's throughput round")
    p.add_argument("--max-batch", type=int, default=8, help="both servers' largest batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="both servers' batch delay")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every process (OMP_NUM_THREADS)")
    p.add_argument("--no-torchserve", action="store_true", help="measure Strata against bare only")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    if not args.no_torchserve and (shutil.which("java") is None or not (VENV_BIN / "torchserve").exists()):
        p.error("TorchServe needs `pip install -e '.[bench]'` and Java 17+ on PATH (or pass --no-torchserve)")
    atexit.register(_stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    data, source = jpeg_input(args.image)
    result = {"model": ARCH, "input": source, "threads": args.threads, "max_batch": args.max_batch,
              "max_wait_ms": args.max_wait_ms, "clients": args.clients, "requests": args.requests,
              "rounds": args.rounds, "seconds_per_round": args.seconds,
              "sizes": [measure_size(size, data, args) for size in args.image_size]}
    print_table(result)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
