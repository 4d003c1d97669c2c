"""The GPU figures of issue 14 in one run, sized for one call of a lent GPU machine (bench/gpu.sh).

Parts, each with its own time budget (an item that would start past it is skipped and says so) and
its own try/except (one failure keeps the others' figures); gpu.json and gpu.md under --out are
rewritten after every item, so a run stopped from outside keeps what it measured:
  train     (a)+(e) train images/s of each architecture (our trainer's ``train_step``, ft, one fixed
            random batch on the device) in fp32 (``amp`` off: PyTorch's defaults, which let cuDNN
            use TF32 for convolutions), fp32 with TF32 off ("fp32-strict"), and bf16 autocast +
            channels_last (``amp`` on: the trainer's default); the bf16 / fp32 ratio (aim >= 1.8 for
            deeplabv3_resnet101), and each variant's peak CUDA memory (``max_memory_allocated`` over
            its set-up and steps, less what was allocated before it);
  teacher   (b) bench/bench_train.py's run in bf16: ld / ft and mib / ft step time (the teacher's
            forward and the distillation terms), and our ft step / a bare PyTorch loop;
  pipeline  (c) images/s through the real training path (``trainer.train`` over SegmentationDataset +
            TrainTransform on generated 512 px PNGs, the trainer's loader with N workers, with and
            without the decoded-image cache) against the same ft steps on a batch already on the
            GPU, with the GPU's utilisation sampled every 0.2 s (NVML) while each runs;
  segment   (d) bench/bench_segment.py as a subprocess on the GPU: /segment latency and 16-client
            throughput through the dynamic batcher against the bare batched forward.
Variants are timed in alternating rounds (drifting load hits all alike); a figure is the median
over rounds of each round's median step time.

    python bench/bench_gpu.py --out OUT                 # on a CUDA machine (bench/gpu.sh does this)
    python bench/bench_gpu.py --out /tmp/g --smoke      # every part on tiny sizes, CPU if no GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))  # bench_train: part (b) is its run()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from services.data.datasets import open_source  # noqa: E402
from services.data.step_dataset import SegmentationDataset  # noqa: E402
from services.data.synthetic import write_shapes_dataset  # noqa: E402
from services.data.transforms import TrainTransform  # noqa: E402
from services.learning import benchmark  # noqa: E402
from services.learning.config import TrainConfig  # noqa: E402
from services.learning.methods import build_method  # noqa: E402
from services.learning.names import ARCHITECTURES, PAPER_ARCHITECTURE, SMALL_ARCHITECTURE  # noqa: E402
from services.learning.trainer import Progress, TrainingCancelled, resolve_device, train  # noqa: E402
from services.learning.zoo import build_model  # noqa: E402

PARTS = ("train", "teacher", "pipeline", "segment")
# Seconds per part on the GPU: together with start-up and installing the API's wheels, under the
# issue's 8 minutes for the whole call (bench/gpu.sh). An item is not started past its part's budget.
BUDGET_S = {"train": 140, "teacher": 50, "pipeline": 90, "segment": 120}
# name -> (amp, channels_last, TF32 allowed in convolutions and matmuls)
VARIANTS = {
    "fp32": (False, False, None),  # what the trainer does with amp off: PyTorch's TF32 defaults
    "fp32-strict": (False, False, False),
    "bf16": (True, False, None),
    "bf16-cl": (True, True, None),  # the trainer's default on CUDA
}
AIM_ARCH, AIM_RATIO = PAPER_ARCHITECTURE, 1.8  # bf16-cl / fp32 images/s for the papers' network
SEGMENT_MIN_S = 45  # a /segment run is not started with less of its budget left


# --- what each part measures ------------------------------------------------------------------------
def part_train(args: argparse.Namespace, deadline: float, rec: dict, save: Callable[[], None]) -> None:
    """(a) + (e): images/s and peak memory per (architecture, variant), ratios to the first variant."""
    rec.update(image_size=args.image_size, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
               repeats=args.repeats, method="ft", variants=list(args.variants), rows=[])
    for arch in args.archs:
        if time.monotonic() > deadline:
            rec["rows"].append({"arch": arch, "skipped": "out of the part's time"})
        else:
            try:
                rec["rows"].append({"arch": arch, **compare_variants(arch, args)})
            except Exception as err:  # noqa: BLE001 - the next architecture may still fit
                rec["rows"].append({"arch": arch, "error": describe(err)})
            free_memory()
        save()
    row = next((r for r in rec["rows"] if r["arch"] == AIM_ARCH and "images_per_s" in r), {})
    ips = row.get("images_per_s", {})
    if "fp32" in ips and "bf16-cl" in ips:
        value = round(ips["bf16-cl"] / ips["fp32"], 3)
        judged = row["precision"]["bf16-cl"] == "bfloat16"  # autocast is CUDA only: on a CPU both are fp32
        rec["aim"] = {"arch": AIM_ARCH, "ratio": value, "min": AIM_RATIO, "met": value >= AIM_RATIO if judged else None}


def compare_variants(arch: str, args: argparse.Namespace) -> dict:
    names = list(args.variants)
    steps, setups, peaks, errors = {}, {}, {}, {}
    per_round: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # set-up and the first round, one variant at a time: each one's own peak
        amp, channels_last, tf32 = VARIANTS[name]
        try:
            base = allocated(args.device)
            reset_peak(args.device)
            setup = benchmark.make_setup(arch, image_size=args.image_size, batch_size=args.batch_size,
                                         device=args.device, amp=amp, channels_last=channels_last)
            steps[name], setups[name] = benchmark.method_step(setup, "ft"), setup
            with tf32_allowed(tf32):
                times = benchmark.time_steps(steps[name], steps=args.steps, warmup=args.warmup, device=setup.device)
            per_round[name].append(statistics.median(times))
            peaks[name] = peak_mib(args.device, base)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: the other variants still run
            errors[name] = describe(err)
            steps.pop(name, None)
            setups.pop(name, None)
            free_memory()
    for _ in range(1, args.repeats):
        for name, step in steps.items():
            with tf32_allowed(VARIANTS[name][2]):
                times = benchmark.time_steps(step, steps=args.steps, warmup=1, device=setups[name].device)
            per_round[name].append(statistics.median(times))
    ms = {n: statistics.median(v) for n, v in per_round.items() if v}
    ips = {n: args.batch_size / (v / 1000) for n, v in ms.items()}
    first = names[0]
    return {
        "precision": {n: str(s.amp_dtype or "float32").removeprefix("torch.") for n, s in setups.items()},
        "channels_last": {n: s.device.type == "cuda" and VARIANTS[n][1] for n, s in setups.items()},
        "step_ms": {n: round(v, 2) for n, v in ms.items()},
        "images_per_s": {n: round(v, 2) for n, v in ips.items()},
        "ratio": {n: (round(ips[n] / ips[first], 3) if n in ips and first in ips else None) for n in names[1:]},
        "peak_mib": peaks,
        **({"errors": errors} if errors else {}),
    }


def part_teacher(args: argparse.Namespace, deadline: float, rec: dict, save: Callable[[], None]) -> None:
    """(b): bench_train's run (bare, ft, ld, mib) in bf16 autocast + channels_last."""
    import bench_train

    rec.update(image_size=args.image_size, batch_size=args.batch_size, rows=[])
    for arch in args.teacher_archs:
        if time.monotonic() > deadline:
            rec["rows"].append({"arch": arch, "skipped": "out of the part's time"})
        else:
            try:
                r = bench_train.run(arch, image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                                    warmup=args.warmup, repeats=args.repeats, device=args.device,
                                    methods=("ld", "mib"), amp=True)
                rec["rows"].append({"arch": arch, "precision": r["precision"], "step_ms": r["step_ms_median"],
                                    "over_ft": r["distillation_over_ft"], "trainer_over_bare": r["trainer_over_bare"]})
            except Exception as err:  # noqa: BLE001
                rec["rows"].append({"arch": arch, "error": describe(err)})
            free_memory()
        save()


def part_pipeline(args: argparse.Namespace, deadline: float, rec: dict, save: Callable[[], None]) -> None:
    """(c): trainer.train over decoded-and-augmented PNGs with N loader workers vs preloaded tensors."""
    arch, size, batch = args.pipeline_arch, args.image_size, args.batch_size
    images = args.pipeline_steps * batch
    rec.update(arch=arch, image_size=size, batch_size=batch, steps=args.pipeline_steps,
               report_every=args.report_every, unique_images=args.unique_images, rows=[])
    with tempfile.TemporaryDirectory(prefix="strata-gpu-bench-") as tmp:
        started = time.perf_counter()
        root = write_shapes_dataset(Path(tmp) / "shapes", {"train": args.unique_images}, size=size, num_shapes=4)
        source = open_source(root, "train")
        rec["dataset_written_s"] = round(time.perf_counter() - started, 2)
        # The generated images repeat to fill the steps (a file is decoded each time it is drawn).
        indices = [i % len(source) for i in range(images)]
        identity = np.arange(256, dtype=np.uint8)
        runs: list[tuple[str, int, bool]] = [("preloaded", 0, False)]
        runs += [(f"loader, {w} workers", w, False) for w in args.workers]
        if args.cache and hasattr(SegmentationDataset, "preload"):
            runs += [(f"loader + decoded cache, {w} workers", w, True) for w in args.workers]
        elif args.cache:
            rec["cache"] = "SegmentationDataset has no preload() in this checkout: not measured"
        runs.append(("preloaded", 0, False))  # again at the end: the baseline is the median of both
        for label, workers, cached in runs:
            if time.monotonic() > deadline:
                rec["rows"].append({"run": label, "skipped": "out of the part's time"})
                save()
                continue
            try:
                if label == "preloaded":
                    row = preloaded_run(arch, source.num_classes, args)
                else:
                    dataset = SegmentationDataset(source, indices, identity, TrainTransform(size))
                    if cached:
                        dataset.preload(round(size * 2.0), 2**34)  # TrainTransform's largest scale: 2.0
                    row = loader_run(arch, source, dataset, workers, args, deadline)
                rec["rows"].append({"run": label, "workers": workers, "cache": cached, **row})
            except Exception as err:  # noqa: BLE001
                rec["rows"].append({"run": label, "workers": workers, "error": describe(err)})
            free_memory()
            save()
    base = [r["images_per_s"] for r in rec["rows"] if r["run"] == "preloaded" and r.get("images_per_s")]
    if base:
        rec["preloaded_images_per_s"] = round(statistics.median(base), 2)
        for r in rec["rows"]:
            if r["run"] != "preloaded" and r.get("images_per_s"):
                r["over_preloaded"] = round(r["images_per_s"] / rec["preloaded_images_per_s"], 3)


def preloaded_run(arch: str, num_classes: int, args: argparse.Namespace) -> dict:
    """The same ft step (bf16 + channels_last on CUDA) on one batch already on the device."""
    setup = benchmark.make_setup(arch, image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                                 num_old=num_classes - 2, num_new=2)
    step = benchmark.method_step(setup, "ft")
    benchmark.time_steps(step, steps=1, warmup=args.warmup, device=setup.device)
    with Utilisation(setup.device) as util:
        times = benchmark.time_steps(step, steps=args.pipeline_steps, warmup=0, device=setup.device)
    return {"images_per_s": round(args.batch_size / (statistics.median(times) / 1000), 2),
            "gpu_util_pct": util.mean()}


def loader_run(arch: str, source, dataset: SegmentationDataset, workers: int, args: argparse.Namespace,
               deadline: float) -> dict:
    """One epoch of ``trainer.train`` (ft, no class weights, no BatchNorm pass); images/s from its
    progress reports after the first (which holds the workers' start and the first kernels' set-up)."""
    torch.manual_seed(0)
    model = build_model(arch, source.num_classes)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, device=args.device, num_workers=workers,
                         class_balance=0.0, batchnorm="update", log_every=args.report_every)
    reports: list[Progress] = []
    util = Utilisation(resolve_device(args.device))

    def on_progress(p: Progress) -> None:
        reports.append(p)
        if len(reports) == 1:
            util.start()  # the measured window starts at the first report

    started = time.perf_counter()
    try:
        train(model, build_method("ft", 0), dataset, config, class_map=dict(enumerate(source.class_names)),
              on_progress=on_progress, should_cancel=lambda: time.monotonic() > deadline)
        cut = False
    except TrainingCancelled:
        cut = True
    finally:
        util.stop()
    measured = [p.images_per_s for p in reports[1:]]
    return {"images_per_s": round(statistics.median(measured), 2) if measured else None,
            "first_report_images_per_s": round(reports[0].images_per_s, 2) if reports else None,
            "reports": len(reports), "gpu_util_pct": util.mean(), "seconds": round(time.perf_counter() - started, 1),
            **({"cut_short": "the part's time ran out"} if cut else {})}


def part_segment(args: argparse.Namespace, deadline: float, rec: dict, save: Callable[[], None]) -> None:
    """(d): bench/bench_segment.py in a subprocess per architecture (it starts the API itself)."""
    rec.update(image_size=args.segment_image_size, clients=args.clients, rows=[])
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}  # the API's too
    for arch in args.segment_archs:
        left = deadline - time.monotonic()
        if left < args.segment_min_s:
            rec["rows"].append({"arch": arch, "skipped": f"{max(left, 0):.0f} s of the part's time left"})
            save()
            continue
        out_json = args.out / f"segment-{arch}.json"
        cmd = [sys.executable, str(ROOT / "bench" / "bench_segment.py"), "--device", args.device, "--arch", arch,
               "--image-size", str(args.segment_image_size), "--input", args.segment_input,
               "--clients", str(args.clients), "--requests", str(args.requests), "--rounds", str(args.rounds),
               "--seconds", str(args.seconds), "--json", str(out_json)]
        started = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left, env=env)
        except subprocess.TimeoutExpired as err:
            rec["rows"].append({"arch": arch, "error": f"stopped after {left:.0f} s (the part's time)",
                                "output_tail": tail(err.stdout) + tail(err.stderr)})
            save()
            continue
        row = {"arch": arch, "seconds": round(time.perf_counter() - started, 1)}
        if done.returncode != 0 or not out_json.is_file():
            row.update(error=f"bench_segment.py exited with {done.returncode}",
                       output_tail=tail(done.stdout) + tail(done.stderr))
        else:
            r = json.loads(out_json.read_text())
            row.update(device=r.get("device"), latency=r["latency"], throughput=r["throughput"], aims=r.get("aims"))
        rec["rows"].append(row)
        save()


PART_FUNCS = {"train": part_train, "teacher": part_teacher, "pipeline": part_pipeline, "segment": part_segment}


# --- helpers ------------------------------------------------------------------------------------------
class Utilisation:
    """The GPU's utilisation (NVML, as nvidia-smi shows it) sampled every ``every_s`` on a thread;
    None on a CPU or where NVML cannot be read."""

    def __init__(self, device: torch.device, every_s: float = 0.2) -> None:
        self.device, self.every_s = device, every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.device.type != "cuda" or self._thread is not None or gpu_utilisation(self.device) is None:
            return
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            value = gpu_utilisation(self.device)
            if value is not None:
                self.samples.append(value)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        return round(statistics.mean(self.samples), 1) if self.samples else None

    def __enter__(self) -> "Utilisation":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def gpu_utilisation(device: torch.device) -> float | None:
    """Percent of the last sample period a kernel ran: torch (NVML via pynvml), else nvidia-smi."""
    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # noqa: BLE001 - no pynvml: ask nvidia-smi
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                              "-i", str(index)], capture_output=True, text=True, timeout=5).stdout
        return float(out.strip().splitlines()[0])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def tf32_allowed(allowed: bool | None):
    """TF32 in cuDNN convolutions and CUDA matmuls set to ``allowed`` inside (None: left as it is)."""
    if allowed is None:
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def cuda_device(device: str) -> torch.device | None:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    return dev if dev.type == "cuda" else None


def allocated(device: str) -> int:
    dev = cuda_device(device)
    return torch.cuda.memory_allocated(dev) if dev is not None else 0


def reset_peak(device: str) -> None:
    dev = cuda_device(device)
    if dev is not None:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def peak_mib(device: str, base: int) -> float | None:
    dev = cuda_device(device)
    if dev is None:
        return None
    return round((torch.cuda.max_memory_allocated(dev) - base) / 2**20, 1)


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err)[:500]}"


def tail(text: str | bytes | None, n: int = 1500) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def environment(device: str) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "device": device}
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    dev = cuda_device(device)
    if dev is not None:
        props = torch.cuda.get_device_properties(dev)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                   cudnn_benchmark=torch.backends.cudnn.benchmark)
    return env


# --- the report ---------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    env, parts = report["environment"], report["parts"]
    lines = [f"# GPU benchmarks (issue 14){' - SMOKE run' if report['smoke'] else ''}", "",
             f"{env.get('gpu', 'no GPU: ' + env['device'])}, torch {env['torch']}, python {env['python']}, "
             f"{env['cpu_count']} CPUs; {report.get('seconds', '?')} s", ""]
    if "train" in parts:
        p = parts["train"]
        lines += [f"## (a) train images/s and (e) peak memory: ft step, batch {p.get('batch_size')} x "
                  f"{p.get('image_size')} px", ""]
        names = p.get("variants", [])
        head = ["architecture"] + [f"{n} img/s" for n in names] + [f"{n} / {names[0]}" for n in names[1:]]
        head += [f"{n} peak MiB" for n in names]
        lines += table_head(head)
        for r in p.get("rows", []):
            if "images_per_s" not in r:
                lines.append(f"| {r['arch']} | {r.get('skipped') or r.get('error')} |")
                continue
            cells = [r["arch"]] + [r["images_per_s"].get(n, "-") for n in names]
            cells += [r["ratio"].get(n) if r["ratio"].get(n) is not None else "-" for n in names[1:]]
            cells += [r["peak_mib"].get(n, "-") if r["peak_mib"].get(n) is not None else "-" for n in names]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
            if r.get("errors"):
                lines.append(f"| {r['arch']}: errors | {r['errors']} |")
        if "aim" in p:
            a = p["aim"]
            verdict = {True: "**met**", False: "**missed**", None: "not judged: no bf16 autocast on this device"}
            lines += ["", f"Aim: bf16-cl / fp32 >= {a['min']} for {a['arch']}: {a['ratio']} ({verdict[a['met']]})"]
        lines.append("")
    if "teacher" in parts:
        p = parts["teacher"]
        lines += [f"## (b) the teacher's overhead: batch {p.get('batch_size')} x {p.get('image_size')} px", ""]
        lines += table_head(["architecture", "precision", "ft ms", "ld ms", "mib ms", "ld / ft", "mib / ft",
                             "ft / bare loop"])
        for r in p.get("rows", []):
            if "step_ms" not in r:
                lines.append(f"| {r['arch']} | {r.get('skipped') or r.get('error')} |")
                continue
            ms, over = r["step_ms"], r["over_ft"]
            lines.append(f"| {r['arch']} | {r['precision']} | {ms['ft']} | {ms['ld']} | {ms['mib']} | {over['ld']} | "
                         f"{over['mib']} | {r['trainer_over_bare']} |")
        lines.append("")
    if "pipeline" in parts:
        p = parts["pipeline"]
        lines += [f"## (c) the data pipeline: {p.get('arch')}, batch {p.get('batch_size')} x {p.get('image_size')} px, "
                  f"{p.get('steps')} steps", ""]
        lines += table_head(["run", "images/s", "/ preloaded", "GPU util %", "s"])
        for r in p.get("rows", []):
            if not r.get("images_per_s"):
                why = r.get("skipped") or r.get("error") or f"{r.get('reports')} progress report(s): too few steps"
                lines.append(f"| {r['run']} | {why} |")
                continue
            lines.append(f"| {r['run']} | {r['images_per_s']} | {r.get('over_preloaded', '')} | "
                         f"{r.get('gpu_util_pct') if r.get('gpu_util_pct') is not None else '-'} | "
                         f"{r.get('seconds', '')} |")
        if p.get("cache"):
            lines += ["", p["cache"]]
        lines.append("")
    if "segment" in parts:
        p = parts["segment"]
        lines += [f"## (d) /segment with dynamic batching: {p.get('image_size')} px, {p.get('clients')} clients", ""]
        lines += table_head(["architecture", "device", "bare p50 ms", "/segment p50 ms", "p50 ratio", "bare img/s",
                             "/segment req/s", "throughput ratio", "mean batch"])
        for r in p.get("rows", []):
            if "latency" not in r:
                lines.append(f"| {r['arch']} | {r.get('skipped') or r.get('error')} |")
                continue
            lat, thr = r["latency"], r["throughput"]
            lines.append(f"| {r['arch']} | {r['device']} | {lat['bare_ms']['p50']} | {lat['segment_ms']['p50']} | "
                         f"{lat['ratio_p50']} | {thr['bare_images_per_s']} | {thr['segment_requests_per_s']} | "
                         f"{thr['ratio']} | {thr['mean_server_batch']} |")
        lines.append("")
    for name, p in parts.items():
        if "error" in p:
            lines += [f"Part {name} failed: {p['error']}", ""]
    return "\n".join(lines)


def table_head(cells: list[str]) -> list[str]:
    return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


# --- the run ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = {"smoke": args.smoke, "command": " ".join(sys.argv), "environment": environment(args.device),
              "budget_s": dict(args.budget), "parts": {}}

    def save() -> None:
        report["seconds"] = round(time.monotonic() - started, 1)
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / "gpu.md").write_text(markdown(report) + "\n")

    for part in args.parts:
        rec: dict = {}
        report["parts"][part] = rec
        part_started = time.monotonic()
        print(f"bench_gpu: part {part} (budget {args.budget[part]} s)", flush=True)
        try:
            PART_FUNCS[part](args, part_started + args.budget[part], rec, save)
        except Exception as err:  # noqa: BLE001 - the next part still runs
            rec["error"] = describe(err)
            rec["traceback"] = traceback.format_exc()[-3000:]
            print(f"bench_gpu: part {part} failed: {rec['error']}", file=sys.stderr, flush=True)
        rec["seconds"] = round(time.monotonic() - part_started, 1)
        free_memory()
        save()
    return report


SMOKE = {"image_size": 64, "batch_size": 2, "steps": 1, "warmup": 1, "repeats": 2,
         "archs": SMALL_ARCHITECTURE, "teacher_archs": SMALL_ARCHITECTURE, "pipeline_arch": SMALL_ARCHITECTURE,
         "pipeline_steps": 4, "report_every": 1, "unique_images": 4, "workers": "1",
         "segment_archs": SMALL_ARCHITECTURE, "segment_image_size": 64, "segment_input": "96x64", "clients": 2,
         "requests": 3, "rounds": 1, "seconds": 1.0, "segment_min_s": 0, "threads": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu.json, gpu.md and segment-*.json")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes on every part (CPU when there is no GPU): checks the script, measures nothing")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--budget", default=",".join(f"{k}={v}" for k, v in BUDGET_S.items()),
                   help="seconds per part, e.g. train=140,segment=60 (parts not named keep their default)")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before a variant's first round")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds")
    p.add_argument("--archs", default=",".join(ARCHITECTURES), help="(a) architectures")
    p.add_argument("--variants", default="fp32,bf16-cl,fp32-strict",
                   help=f"(a) the first is the ratios' base; of {', '.join(VARIANTS)}")
    p.add_argument("--teacher-archs", default=f"{PAPER_ARCHITECTURE},{SMALL_ARCHITECTURE}", help="(b)")
    p.add_argument("--pipeline-arch", default=PAPER_ARCHITECTURE, help="(c) architecture")
    p.add_argument("--pipeline-steps", type=int, default=24, help="(c) steps of each run")
    p.add_argument("--report-every", type=int, default=4, help="(c) steps per progress report (the unit timed)")
    p.add_argument("--unique-images", type=int, default=48, help="(c) generated PNGs, repeated to fill the steps")
    p.add_argument("--workers", default="0,4,8", help="(c) loader worker counts to measure")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="(c) skip the decoded-image cache runs")
    p.add_argument("--segment-archs", default=f"{PAPER_ARCHITECTURE},{SMALL_ARCHITECTURE}", help="(d)")
    p.add_argument("--segment-image-size", type=int, default=512, help="(d) the model's shorter side")
    p.add_argument("--segment-input", default="480x360", help="(d) the uploaded JPEG's WIDTHxHEIGHT")
    p.add_argument("--clients", type=int, default=16, help="(d) concurrent clients (and the server's max batch)")
    p.add_argument("--requests", type=int, default=30, help="(d) sequential requests for latency")
    p.add_argument("--rounds", type=int, default=2, help="(d) alternating throughput rounds")
    p.add_argument("--seconds", type=float, default=5.0, help="(d) length of one served throughput round")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default torch's choice; --smoke: 1, as on a small shared machine)")
    p.add_argument("--segment-min-s", type=float, default=SEGMENT_MIN_S, help=argparse.SUPPRESS)
    smoke = "--smoke" in (sys.argv[1:] if argv is None else argv)
    if smoke:
        p.set_defaults(**SMOKE)  # explicit flags still win
    args = p.parse_args(argv)
    args.smoke = smoke
    split = lambda s: [v.strip() for v in str(s).split(",") if v.strip()]  # noqa: E731
    args.parts, args.archs, args.teacher_archs = split(args.parts), split(args.archs), split(args.teacher_archs)
    args.segment_archs, args.variants = split(args.segment_archs), split(args.variants)
    for name, values, known in (("--parts", args.parts, PARTS), ("--archs", args.archs, ARCHITECTURES),
                                ("--teacher-archs", args.teacher_archs, ARCHITECTURES),
                                ("--segment-archs", args.segment_archs, ARCHITECTURES),
                                ("--pipeline-arch", [args.pipeline_arch], ARCHITECTURES),
                                ("--variants", args.variants, tuple(VARIANTS))):
        bad = [v for v in values if v not in known]
        if bad or not values:
            p.error(f"{name}: {', '.join(bad) or 'nothing'} not among {', '.join(known)}")
    try:
        args.workers = [int(w) for w in split(args.workers)]
        assert args.workers and min(args.workers) >= 0
    except (ValueError, AssertionError):
        p.error(f"--workers must be comma-separated ints >= 0, got {args.workers!r}")
    budget = dict(BUDGET_S)
    for item in split(args.budget):
        name, _, seconds = item.partition("=")
        try:
            if name not in budget or float(seconds) <= 0:
                raise ValueError
        except ValueError:
            p.error(f"--budget: {item!r} is not PART=SECONDS with a part among {', '.join(PARTS)}")
        budget[name] = float(seconds)
    args.budget = budget
    if not smoke and cuda_device(args.device) is None:
        p.error("no CUDA device here (this machine has no GPU, or --device cpu): the figures are GPU figures; "
                "run with --smoke to check the script on the CPU")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args)
    print(markdown(report))
    print(f"bench_gpu: wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}", flush=True)
    failed = [name for name, part in report["parts"].items() if "error" in part]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
