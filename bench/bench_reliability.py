"""Serving under promotion: POST /models/{name}/segment from 16 clients while the production alias
moves every few seconds, against the same clients on the same API without promotions.

In one run, on a temporary embedded data dir (SQLite + local object store) with the API in a uvicorn
subprocess (``services.cli.processes.api_command``, as ``strata api`` starts it), a model "bench" gets
two versions without training (tests/services/inference/helpers.py ``publish``: a real LR-ASPP
MobileNetV3 whose classifier answers one class everywhere, saved, uploaded and recorded as the worker
does): version 1 answers "road" at every pixel, version 2 (one class more) "person". Version 1 is in
production. Then ``--clients`` threads, each with its own keep-alive httpx client, send the same
480x360 PNG (a CamVid val image, or a synthetic scene without CamVid) back to back with
``Accept: image/png``:
  (a) baseline: ``--baseline`` x ``--duration`` seconds, no promotion;
  (b) under promotion: ``--duration`` seconds while a promoter thread moves ``production`` between
      the two versions every ``--promote-every`` seconds (PUT /models/bench/aliases/production
      {"version": v} with an admin key), starting with version 2 (its first move loads it).
Each answer is checked: status 200, X-Model-Version, and its mask decoded: every pixel must be the
class of the version that the header names (one version answered the whole request). Reported: requests,
errors (by status, first bodies), wrong masks, p50/p99 latency and throughput of both phases and their
ratios, both versions' answer counts, per promotion when the new version's first answer came back
(relative to the PUT's answer) and whether any request started later got the old one, and the API
process's memory (/proc/<pid>/status VmRSS sampled every 100 ms; VmHWM reset through clear_refs when
the promotion phase starts, so it is that phase's kernel-measured peak).
Exit status 1 if any request errored, any mask was wrong or any promotion failed.

    python bench/bench_reliability.py                          # 180 s under promotion, 36 s baseline
    python bench/bench_reliability.py --duration 30 --json r.json
    python bench/bench_reliability.py --promote-every 1 --clients 32
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from bench_ingest import free_port, proc_status, start_api, stop_api  # noqa: E402
from bench_segment import street_scene, wait_until_serving  # noqa: E402
from PIL import Image  # noqa: E402

from services.cli.run import prepare  # noqa: E402
from services.config import Settings, load_settings  # noqa: E402
from services.db.session import make_engine, make_session_factory  # noqa: E402
from services.storage import open_store  # noqa: E402
from tests.services.inference.helpers import create_model, publish  # noqa: E402

CAMVID_VAL = ROOT.parent / "shared" / "datasets" / "camvid" / "val" / "images"
MODEL = "bench"
V1_CLASSES = {0: "background", 1: "road", 2: "car"}
V2_CLASSES = {**V1_CLASSES, 3: "person"}  # an incremental step: one class more
FIRST_BODIES = 5  # error bodies kept


# --- the service ---------------------------------------------------------------------------------------
def seed_versions(settings: Settings, image_size: int) -> dict[int, int]:
    """Model MODEL with version 1 (production) and version 2 (its child, not promoted); returns
    {version: the class index at every pixel of its masks}."""
    engine = make_engine(settings)
    try:
        sessions, store = make_session_factory(engine), open_store(settings)
        model_id = create_model(sessions, MODEL, "reliability benchmark")
        v1 = publish(sessions, store, settings, model_id=model_id, version=1, class_map=V1_CLASSES, winner=1,
                     image_size=image_size)
        v2 = publish(sessions, store, settings, model_id=model_id, version=2, class_map=V2_CLASSES, winner=3,
                     image_size=image_size, parent=1, to_production=False)
    finally:
        engine.dispose()
    return {1: v1, 2: v2}


def scene_png(path: Path | None, size: tuple[int, int]) -> tuple[bytes, str]:
    """(PNG bytes, where they came from): ``path`` (or the first CamVid val image) at ``size``, or a
    synthetic street-like scene with sensor-like noise (so the PNG is photo-sized, not a few KB)."""
    if path is None and CAMVID_VAL.is_dir():
        path = next(iter(sorted(CAMVID_VAL.glob("*.jpg"))), None)
    if path is not None:
        im, source = Image.open(path).convert("RGB").resize(size), f"{path.name} as PNG"
    else:
        width, height = size
        rng = np.random.default_rng(0)
        im = street_scene(width, height, rng)
        noisy = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
        im, source = Image.fromarray(noisy.clip(0, 255).astype(np.uint8)), "synthetic scene"
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue(), f"{source}, {size[0]}x{size[1]}, {len(out.getvalue()) // 1024} KiB"


# --- the load --------------------------------------------------------------------------------------------
@dataclass
class Answer:
    started: float  # seconds since the phase's clock started
    ended: float
    status: int | str  # HTTP status, or the exception's type name
    version: int | None = None
    mask_ok: bool | None = None  # every pixel is the class of `version` (None: not a 200)
    body: str | None = None  # the start of an error's body


@dataclass
class Move:
    target: int
    sent: float
    answered: float
    status: int | str
    body: str | None = None


def check_mask(png: bytes, version: int, class_of: dict[int, int], size: tuple[int, int]) -> bool:
    """True when the mask has the input's size and every pixel is ``version``'s class."""
    mask = np.asarray(Image.open(io.BytesIO(png)))
    values = np.unique(mask)
    return mask.shape == (size[1], size[0]) and values.tolist() == [class_of.get(version, -1)]


def segment(client: httpx.Client, image: bytes, class_of: dict[int, int], size: tuple[int, int],
            t0: float) -> Answer:
    started = time.perf_counter() - t0
    try:
        r = client.post(f"/models/{MODEL}/segment", files={"image": ("scene.png", image, "image/png")},
                        headers={"Accept": "image/png"})
    except httpx.HTTPError as err:
        return Answer(started, time.perf_counter() - t0, type(err).__name__, body=str(err)[:300])
    ended = time.perf_counter() - t0
    if r.status_code != 200:
        return Answer(started, ended, r.status_code, body=r.text[:300])
    version = int(r.headers.get("X-Model-Version", "0"))
    return Answer(started, ended, 200, version, check_mask(r.content, version, class_of, size))


def client_loop(base: str, headers: dict, image: bytes, class_of: dict[int, int], size: tuple[int, int],
                clock: dict, barrier: threading.Barrier, out: list[Answer]) -> None:
    """One keep-alive client: two warm-up requests (connection, first batches), then back to back
    until ``clock["stop"]``. Answers go to ``out`` (its own list: no lock)."""
    with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
        for _ in range(2):
            segment(c, image, class_of, size, time.perf_counter())
        barrier.wait()
        while time.perf_counter() < clock["stop"]:
            out.append(segment(c, image, class_of, size, clock["t0"]))


def promoter_loop(base: str, headers: dict, every: float, clock: dict, moves: list[Move]) -> None:
    """Move production 2, 1, 2, ... at t0 + every, t0 + 2 x every, ... (a fixed cadence: no drift)."""
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        k = 1
        while True:
            due = clock["t0"] + k * every
            if due >= clock["stop"]:
                return
            time.sleep(max(0.0, due - time.perf_counter()))
            target = 2 if k % 2 else 1
            sent = time.perf_counter() - clock["t0"]
            try:
                r = c.put(f"/models/{MODEL}/aliases/production", json={"version": target})
                status, body = r.status_code, None if r.status_code == 200 else r.text[:300]
            except httpx.HTTPError as err:
                status, body = type(err).__name__, str(err)[:300]
            moves.append(Move(target, sent, time.perf_counter() - clock["t0"], status, body))
            k += 1


def sample_memory(pid: int, stop: threading.Event, samples: list[tuple[float, str, int]], phase: dict,
                  period: float = 0.1) -> None:
    """(seconds since the sampler started, phase, VmRSS bytes) every ``period``."""
    began = time.perf_counter()
    while not stop.is_set():
        try:
            samples.append((time.perf_counter() - began, phase["name"], proc_status(pid, "VmRSS")))
        except (OSError, RuntimeError):  # the process is gone: the run fails elsewhere
            return
        stop.wait(period)


def drive(base: str, headers: dict, image: bytes, class_of: dict[int, int], size: tuple[int, int],
          clients: int, seconds: float, promote: tuple[dict, float] | None = None) -> tuple[list[Answer], list[Move]]:
    """``clients`` threads for ``seconds`` after their warm-up (and the promoter, when ``promote`` is
    (admin headers, every s)): every answer and every move, on one clock starting at 0."""
    per_client: list[list[Answer]] = [[] for _ in range(clients)]
    moves: list[Move] = []
    clock = {"t0": 0.0, "stop": float("inf")}
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=client_loop, args=(base, headers, image, class_of, size, clock, barrier, out))
               for out in per_client]
    for t in threads:
        t.start()
    barrier.wait()  # every client has warmed up; none sends before the clock is set
    clock["t0"] = time.perf_counter()
    clock["stop"] = clock["t0"] + seconds
    if promote is not None:
        threads.append(threading.Thread(target=promoter_loop, args=(base, promote[0], promote[1], clock, moves)))
        threads[-1].start()
    for t in threads:
        t.join()
    return sorted((a for out in per_client for a in out), key=lambda a: a.started), moves


# --- the figures ----------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarise(answers: list[Answer], seconds: float) -> dict:
    ok = [a for a in answers if a.status == 200]
    ms = [1000 * (a.ended - a.started) for a in answers]
    errors: dict[str, int] = {}
    for a in answers:
        if a.status != 200:
            errors[str(a.status)] = errors.get(str(a.status), 0) + 1
    by_version: dict[str, int] = {}
    for a in ok:
        by_version[str(a.version)] = by_version.get(str(a.version), 0) + 1
    return {
        "seconds": seconds, "requests": len(answers), "errors": sum(errors.values()), "errors_by_status": errors,
        "first_error_bodies": [f"{a.status}: {a.body}" for a in answers if a.status != 200][:FIRST_BODIES],
        "wrong_masks": sum(1 for a in ok if not a.mask_ok), "answers_by_version": by_version,
        "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": round(max(ms), 1) if ms else None,
        "requests_per_s": round(len(answers) / seconds, 2),
    }


def swaps(answers: list[Answer], moves: list[Move], seconds: float) -> dict:
    """Per move, over the requests sent between it and the next move; times in ms after the PUT was
    answered (negative: before the promoter had read its answer):
      old_until_ms: the latest send of a request that the old version still answered;
      new_from_ms: the earliest send of a request that the new version answered;
      first_new_answer_ms: when the new version's first answer came back;
      stale: old-version answers to requests sent after that first new answer had come back (a request
        takes its model's pointer after it arrives and the swap is one assignment: must be 0).
    A request takes the pointer after its upload and decoding, so old and new overlap by about that
    much; with queueing longer than --promote-every, a new answer may come back after the next move.
    Also the latency of the requests sent within 1 s after each PUT was sent."""
    rows, after_put = [], []
    for i, m in enumerate(moves):
        until = moves[i + 1].sent if i + 1 < len(moves) else seconds
        window = [a for a in answers if m.sent <= a.started < until]
        after_put += [1000 * (a.ended - a.started) for a in window if a.started < m.sent + 1.0]
        old = [a.started for a in window if a.status == 200 and a.version != m.target]
        new = [a for a in window if a.status == 200 and a.version == m.target]
        rel = lambda t, m=m: round(1000 * (t - m.answered), 1)  # noqa: E731
        first = min((a.ended for a in new), default=None)
        rows.append({
            "target": m.target, "sent_s": round(m.sent, 2), "put_ms": round(1000 * (m.answered - m.sent), 1),
            "status": m.status, "body": m.body, "requests": len(window),
            "old_until_ms": rel(max(old)) if old else None,
            "new_from_ms": rel(min(a.started for a in new)) if new else None,
            "first_new_answer_ms": rel(first) if first is not None else None,
            "stale": sum(1 for a in window if first is not None and a.started >= first and a.status == 200
                         and a.version != m.target),
        })

    def spread(key: str) -> dict:
        values = [r[key] for r in rows if r[key] is not None]
        return {"first_move": rows[0][key] if rows else None, "p50": pct(values, 50),
                "max": max(values) if values else None}

    return {
        "moves": len(moves), "failed_moves": sum(1 for r in rows if r["status"] != 200),
        "never_switched": sum(1 for r in rows if r["new_from_ms"] is None),
        "stale_answers": sum(r["stale"] for r in rows),
        "old_until_ms": spread("old_until_ms"), "new_from_ms": spread("new_from_ms"),
        "first_new_answer_ms": spread("first_new_answer_ms"), "put_ms": spread("put_ms"),
        "sent_within_1s_of_a_put": {"requests": len(after_put), "p50_ms": pct(after_put, 50),
                                    "p99_ms": pct(after_put, 99)},
        "each": rows,
    }


def memory(samples: list[tuple[float, str, int]], hwm_promotion: int) -> dict:
    mib = 1 / 2**20
    phase = {name: [(t, rss) for t, p, rss in samples if p == name] for name in ("baseline", "promotion")}
    promo = phase["promotion"]
    trend = None
    if len(promo) > 10:  # MiB per minute over the second half (the first move loads version 2: a step)
        t, rss = np.array(promo[len(promo) // 2:]).T
        trend = round(float(np.polyfit(t, rss * mib, 1)[0]) * 60, 2)
    return {
        "start_mib": round(samples[0][2] * mib, 1), "end_of_baseline_mib": round(phase["baseline"][-1][1] * mib, 1),
        "start_of_promotion_mib": round(promo[0][1] * mib, 1), "end_mib": round(samples[-1][2] * mib, 1),
        "peak_sampled_mib": round(max(rss for *_, rss in samples) * mib, 1),
        "peak_promotion_vmhwm_mib": round(hwm_promotion * mib, 1), "promotion_trend_mib_per_min": trend,
        "series_mib": [[round(t, 1), p, round(rss * mib, 1)] for t, p, rss in samples[::10]],
    }


# --- the run ---------------------------------------------------------------------------------------------
def run(duration: float, promote_every: float, baseline_fraction: float, clients: int, image_size: int,
        image: bytes, size: tuple[int, int]) -> dict:
    keys = {"admin": secrets.token_hex(20), "infer": secrets.token_hex(20)}
    baseline_s = max(5.0, baseline_fraction * duration)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="strata-bench-reliability-") as tmp:
        work = Path(tmp)
        settings = load_settings(data_dir=work / "var", port=free_port(), log_level="warning",
                                 inference_device="cpu", admin_key=keys["admin"], infer_key=keys["infer"])
        prepare(settings)
        class_of = seed_versions(settings, image_size)
        base, log = f"http://127.0.0.1:{settings.port}", work / "api.log"
        proc = start_api(settings, log)
        stop, samples, phase = threading.Event(), [], {"name": "baseline"}
        try:
            wait_until_serving(base, proc, log, model=MODEL)
            sampler = threading.Thread(target=sample_memory, args=(proc.pid, stop, samples, phase))
            sampler.start()
            infer = {"Authorization": f"Bearer {keys['infer']}"}
            print(f"baseline: {clients} clients for {baseline_s:.0f} s", flush=True)
            base_answers, _ = drive(base, infer, image, class_of, size, clients, baseline_s)
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := current RSS: the promotion phase's peak
            phase["name"] = "promotion"
            print(f"under promotion: {clients} clients for {duration:.0f} s, a move every {promote_every:g} s",
                  flush=True)
            answers, moves = drive(base, infer, image, class_of, size, clients, duration,
                                   ({"Authorization": f"Bearer {keys['admin']}"}, promote_every))
            hwm = proc_status(proc.pid, "VmHWM")
            stop.set()
            sampler.join()
            api_log = log.read_text(errors="replace")
        finally:
            stop.set()
            stop_api(proc)
    return {
        "loadavg_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "flavour": "embedded (SQLite + local object store)", "clients": clients, "image_size": image_size,
        "promote_every_s": promote_every, "inference": {"max_batch": settings.inference_max_batch,
                                                        "max_wait_ms": settings.inference_max_wait_ms,
                                                        "max_loaded": settings.inference_max_loaded},
        "baseline": summarise(base_answers, baseline_s), "promotion": summarise(answers, duration),
        "swaps": swaps(answers, moves, duration), "memory": memory(samples, hwm),
        "api_log_errors": [line for line in api_log.splitlines() if "ERROR" in line or "Traceback" in line][:10],
    }


def add_ratios(r: dict) -> dict:
    b, p = r["baseline"], r["promotion"]
    r["ratios"] = {k: round(p[k] / b[k], 3) if b[k] else None for k in ("p50_ms", "p99_ms", "requests_per_s")}
    r["failed"] = bool(b["errors"] or p["errors"] or b["wrong_masks"] or p["wrong_masks"]
                       or r["swaps"]["failed_moves"])
    return r


def print_table(r: dict) -> None:
    b, p, s, m, q = r["baseline"], r["promotion"], r["swaps"], r["memory"], r["ratios"]
    load = r["loadavg_1min"]
    print(f"\nload average (1 min): {load['start']} before the run, {load['end']} at its end (ours included), "
          f"{os.cpu_count()} cores")
    print(f"{r['clients']} clients, POST /models/{MODEL}/segment ({r['image']}), LR-ASPP at {r['image_size']} px, "
          f"{r['flavour']}, batch <= {r['inference']['max_batch']}")
    print(f"{'measure':<30}{'baseline':>12}{'promotion':>12}{'ratio':>8}")
    for label, key in (("seconds", "seconds"), ("requests", "requests"), ("errors", "errors"),
                       ("wrong masks", "wrong_masks")):
        print(f"{label:<30}{b[key]:>12}{p[key]:>12}")
    for label, key in (("latency p50 (ms)", "p50_ms"), ("latency p99 (ms)", "p99_ms"),
                       ("throughput (requests/s)", "requests_per_s")):
        print(f"{label:<30}{b[key]:>12}{p[key]:>12}{q[key]:>8}")
    print(f"{'latency max (ms)':<30}{b['max_ms']:>12}{p['max_ms']:>12}")
    print(f"answers by version: baseline {b['answers_by_version']}, under promotion {p['answers_by_version']}")
    for phase in (b, p):
        if phase["errors"]:
            print(f"errors by status: {phase['errors_by_status']}; first bodies: {phase['first_error_bodies']}")
    print(f"promotions: {s['moves']} ({s['failed_moves']} failed); moves the new version never answered a request "
          f"sent before the next move: {s['never_switched']}; old-version answers after a new one came back: "
          f"{s['stale_answers']}")
    print(f"{'ms after the PUT was answered':<42}{'first move':>12}{'p50':>10}{'max':>10}")
    for label, key in (("PUT /aliases/production (ms it took)", "put_ms"),
                       ("last request sent that got the old version", "old_until_ms"),
                       ("first request sent that got the new one", "new_from_ms"),
                       ("first answer of the new version", "first_new_answer_ms")):
        print(f"{label:<42}{str(s[key]['first_move']):>12}{str(s[key]['p50']):>10}{str(s[key]['max']):>10}")
    w = s["sent_within_1s_of_a_put"]
    print(f"requests sent within 1 s of a PUT: {w['requests']}, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms")
    print(f"API RSS (MiB): start {m['start_mib']}, end of baseline {m['end_of_baseline_mib']}, "
          f"start of promotion {m['start_of_promotion_mib']}, end {m['end_mib']}; peak {m['peak_sampled_mib']} "
          f"sampled, {m['peak_promotion_vmhwm_mib']} VmHWM under promotion; trend under promotion "
          f"{m['promotion_trend_mib_per_min']} MiB/min")
    if r["api_log_errors"]:
        print("API log errors:", *r["api_log_errors"], sep="\n  ")
    print("FAILED: a request errored, a mask was wrong or a promotion failed" if r["failed"] else "no errors")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=180.0, help="seconds under promotion")
    p.add_argument("--promote-every", type=float, default=3.0, help="seconds between production moves")
    p.add_argument("--baseline", type=float, default=0.2, help="baseline length as a fraction of --duration")
    p.add_argument("--clients", type=int, default=16, help="concurrent keep-alive clients")
    p.add_argument("--image-size", type=int, default=256, help="the versions' shorter side (px)")
    p.add_argument("--image", type=Path, help="the image to send (default: the first CamVid val image)")
    p.add_argument("--input", default="480x360", help="the sent PNG's WIDTHxHEIGHT")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    try:
        size = tuple(int(v) for v in args.input.lower().split("x"))
        assert len(size) == 2
    except (ValueError, AssertionError):
        p.error(f"--input must be WIDTHxHEIGHT, e.g. 480x360, got {args.input!r}")
    image, source = scene_png(args.image, size)
    result = run(args.duration, args.promote_every, args.baseline, args.clients, args.image_size, image, size)
    result = add_ratios({"image": source, **result})
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
