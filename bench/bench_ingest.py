"""What ingest costs: POST /tasks with the CamVid train split against a bare copy + sha256.

Builds the upload in a temporary folder (images as they are; masks in local index form: the task's
classes are CamVid's 11 names in index order, so CamVid value v becomes v + 1; 255 stays 255), starts
the API (uvicorn subprocess, embedded data dir in the same folder, so on the same disk; no worker: the
task stays queued) and measures, ``--repeats`` times alternating:
  (a) bare: copy the payload (the zip; every file in ``--mode files``) to other files on the same disk
      and sha256 the copies -- what ingest must at least do with the bytes;
  (b) POST /tasks (202): wall time and MB/s; the task is then cancelled, freeing its class names.
The API's RSS (/proc/<pid>/status VmRSS) is sampled every 20 ms; its baseline is taken after start-up,
GET /readyz and a 2-image task; the kernel's VmHWM (reset through clear_refs after the baseline)
cross-checks the sampled peak. The client streams the files from disk (httpx, 64 KiB chunks).

    python bench/bench_ingest.py                 # one zip `archive`
    python bench/bench_ingest.py --mode files    # multipart `images` + `masks`
    python bench/bench_ingest.py --copies 5 --json r.json   # the split 5 times over (stems suffixed)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from services.cli.processes import api_command  # noqa: E402
from services.cli.run import prepare  # noqa: E402
from services.config import Settings, load_settings, settings_env  # noqa: E402
from services.labels import IGNORE_INDEX  # noqa: E402

CAMVID = ROOT.parent / "shared" / "datasets" / "camvid"
MODEL = "bench"  # the model the uploads go to
Part = tuple[str, str, Path]  # (form field, filename, file on disk)


# --- the upload ------------------------------------------------------------------------------------
def build_parts(split: Path, out: Path, copies: int) -> list[Part]:
    """images + local index masks (CamVid v -> v + 1, 255 kept), ``copies`` times with suffixed stems."""
    lut = [v + 1 if v <= 10 else IGNORE_INDEX for v in range(256)]
    (out / "masks").mkdir(parents=True)
    parts: list[Part] = []
    for image in sorted((split / "images").glob("*.jpg")):
        source, mask = split / "masks" / f"{image.stem}.png", out / "masks" / f"{image.stem}.png"
        with Image.open(source) as im:
            if im.mode != "L" or any(im.histogram()[11:IGNORE_INDEX]):
                raise ValueError(f"{source}: expected an 8-bit mask of values 0..10 and 255")
            im.point(lut).save(mask)
        for k in range(copies):
            stem = image.stem if copies == 1 else f"{image.stem}_c{k}"
            parts += [("images", f"{stem}.jpg", image), ("masks", f"{stem}.png", mask)]
    if not parts:
        raise ValueError(f"no images/*.jpg under {split}")
    return parts


def showing_every_class(parts: list[Part], count: int) -> list[Part]:
    """The first image/mask pairs whose masks show every class 1..count together (a task's classes must each
    appear in a mask)."""
    seen: set[int] = set()
    for end in range(2, len(parts) + 1, 2):
        with Image.open(parts[end - 1][2]) as mask:
            seen |= {v for v, n in enumerate(mask.histogram()) if n and 1 <= v <= count}
        if len(seen) == count:
            return parts[:end]
    raise ValueError(f"the masks together show only classes {sorted(seen)} of 1..{count}")


def build_zip(parts: list[Part], path: Path) -> list[Part]:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for field, name, src in parts:
            zf.write(src, f"{field}/{name}")
    return [("archive", path.name, path)]


# --- measuring -----------------------------------------------------------------------------------------
def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def sample_rss(pid: int, stop: threading.Event, samples: list[int], period: float = 0.02) -> None:
    while not stop.is_set():
        samples.append(proc_status(pid, "VmRSS"))
        time.sleep(period)


def rss_for(pid: int, seconds: float) -> list[int]:
    stop, samples = threading.Event(), []
    threading.Timer(seconds, stop.set).start()
    sample_rss(pid, stop, samples)
    return samples


def bare_copy_hash(paths: list[Path], dst: Path) -> float:
    """Seconds to copy every file into ``dst`` (same disk) and sha256 the copy, as a store does."""
    dst.mkdir()
    started = time.perf_counter()
    for i, path in enumerate(paths):
        shutil.copyfile(path, dst / str(i))
        with open(dst / str(i), "rb") as f:
            hashlib.file_digest(f, "sha256")
    elapsed = time.perf_counter() - started
    shutil.rmtree(dst)
    return elapsed


def post_task(client: httpx.Client, spec: dict, parts: list[Part]) -> tuple[float, int, str]:
    """(seconds, body bytes, task id) of one POST /models/{name}/tasks; raises unless it answered 202. httpx
    streams each open file in 64 KiB chunks, so the client never holds the upload in memory."""
    with ExitStack() as files:
        fields = [(f, (name, files.enter_context(path.open("rb")))) for f, name, path in parts]
        started = time.perf_counter()
        r = client.post(f"/models/{MODEL}/tasks", data={"spec": json.dumps(spec)}, files=fields)
        elapsed = time.perf_counter() - started
    if r.status_code != 202:
        raise RuntimeError(f"POST /models/{MODEL}/tasks answered {r.status_code}: {r.text[:1000]}")
    return elapsed, int(r.request.headers["Content-Length"]), r.json()["id"]


def cancel(client: httpx.Client, task_id: str) -> None:
    """Cancel the queued task: its class names are free again for the next round."""
    r = client.post(f"/tasks/{task_id}/cancel")
    if r.status_code != 200:
        raise RuntimeError(f"cancelling {task_id} answered {r.status_code}: {r.text[:500]}")


# --- the API -----------------------------------------------------------------------------------------------
def start_api(settings: Settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        return subprocess.Popen(api_command(settings), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop_api(proc: subprocess.Popen) -> None:
    """SIGTERM (uvicorn shuts down gracefully), SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_healthy(client: httpx.Client, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not start within {timeout} s:\n{log.read_text()[-3000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the run ----------------------------------------------------------------------------------------------
def run(split: Path, mode: str, copies: int, repeats: int) -> dict:
    names = [json.loads((split.parent / "classes.json").read_text())[str(i)] for i in range(11)]
    with tempfile.TemporaryDirectory(prefix="strata-bench-ingest-") as tmp:
        work = Path(tmp)
        loose = build_parts(split, work / "upload", copies)
        parts, small = loose, showing_every_class(loose, len(names))  # for the warm-up task
        if mode == "zip":
            parts, small = build_zip(loose, work / "camvid.zip"), build_zip(small, work / "small.zip")
        key, port = secrets.token_hex(20), free_port()  # a 40-character admin key
        settings = load_settings(data_dir=work / "var", port=port, log_level="warning", admin_key=key)
        prepare(settings)
        proc = start_api(settings, work / "api.log")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600,
                              headers={"Authorization": f"Bearer {key}"}) as client:
                wait_healthy(client, proc, work / "api.log")
                client.get("/readyz")
                client.post("/models", json={"name": MODEL}).raise_for_status()
                post_task(client, {"classes": [f"warm-up {n}" for n in names], "epochs": 1}, small)
                result = measure(client, proc.pid, work / "bare", parts, names, repeats)
        finally:
            stop_api(proc)
    return {"mode": mode, "images": len(loose) // 2, "repeats": repeats, **result}


def measure(client: httpx.Client, pid: int, bare_dir: Path, parts: list[Part], names: list[str],
            repeats: int) -> dict:
    """Baseline RSS, then ``repeats`` rounds of (bare copy + hash, POST /tasks + cancel) under the sampler."""
    baseline = statistics.median(rss_for(pid, 0.5))
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS: it then covers the uploads only
    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=sample_rss, args=(pid, stop, samples), daemon=True)
    sampler.start()
    bare_s, ingest_s, body = [], [], 0
    try:
        for _ in range(repeats):  # alternating: drifting machine load hits both alike
            bare_s.append(bare_copy_hash([p for _, _, p in parts], bare_dir))
            seconds, body, task_id = post_task(client, {"classes": names, "epochs": 1}, parts)
            ingest_s.append(seconds)
            cancel(client, task_id)
    finally:
        stop.set()
        sampler.join()
    ingest, bare, peak, mb = statistics.median(ingest_s), statistics.median(bare_s), max(samples), 1e6
    return {
        "upload_mb": round(body / mb, 2), "ingest_s": round(ingest, 3), "upload_mb_per_s": round(body / mb / ingest, 2),
        "bare_copy_hash_s": round(bare, 3), "ratio": round(ingest / bare, 1),
        "ingest_s_all": [round(s, 3) for s in ingest_s], "bare_s_all": [round(s, 3) for s in bare_s],
        "rss_mb": {"baseline": round(baseline / mb, 1), "peak": round(peak / mb, 1),
                   "peak_kernel_hwm": round(proc_status(pid, "VmHWM") / mb, 1),
                   "growth": round((peak - baseline) / mb, 1), "growth_per_upload": round((peak - baseline) / body, 3)},
    }


def print_table(r: dict) -> None:
    rss = r["rss_mb"]
    print(f"POST /tasks, mode {r['mode']}: {r['images']} images, {r['upload_mb']} MB body, median of {r['repeats']}")
    for label, value in [("bare copy + sha256 (s)", r["bare_copy_hash_s"]), ("POST /tasks -> 202 (s)", r["ingest_s"]),
                         ("ingest / bare", r["ratio"]), ("upload (MB/s)", r["upload_mb_per_s"]),
                         ("API RSS baseline (MB)", rss["baseline"]), ("API RSS peak, sampled (MB)", rss["peak"]),
                         ("API RSS peak, kernel VmHWM (MB)", rss["peak_kernel_hwm"]),
                         ("peak - baseline (MB)", rss["growth"]), ("(peak - baseline) / upload", rss["growth_per_upload"])]:
        print(f"  {label:<34}{value:>10}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=CAMVID / "train", help="a CamVid split: images/, masks/")
    p.add_argument("--mode", choices=["zip", "files"], default="zip", help="one `archive`, or `images` + `masks`")
    p.add_argument("--copies", type=int, default=1, help="upload the split this many times over (stems suffixed)")
    p.add_argument("--repeats", type=int, default=3, help="alternating bare / POST rounds")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.copies < 1 or args.repeats < 1:
        p.error("--copies and --repeats must be at least 1")
    if not (args.data / "images").is_dir() or not (args.data.parent / "classes.json").is_file():
        p.error(f"--data {args.data} needs images/ and masks/, and classes.json in its parent folder")
    try:
        result = run(args.data, args.mode, args.copies, args.repeats)
    except (RuntimeError, ValueError, httpx.HTTPError) as err:
        print(f"bench_ingest: {err}", file=sys.stderr)
        return 1
    print_table(result)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
