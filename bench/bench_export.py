"""What exporting costs, and what the exported files cost to run, against PyTorch in the same run.

In one process this publishes a random-init ``lraspp_mobilenet_v3_large`` (bench_segment's
``publish_model``: version 1 of model "bench", in a temporary embedded data dir) and measures:
  (a) export time per format through the service's own path (``export_version``: checkpoint
      loaded, file written, checked in its runtime, stored, recorded), then a second request for
      the ONNX file (served from the cache);
  (b) with --compare-exporters: torch's two ONNX exporters on the same graph, the TorchScript-based
      one Strata uses (``write_onnx``, without the check) and the torch.export-based one
      (``dynamo=True``) with the same free batch, height and width;
  (c) CPU latency on one CamVid image (480x360, the model's shorter side 360: the image at its own
      size) of the ONNX model in ONNX Runtime and the TorchScript module, against the PyTorch
      network (the graph /segment runs: padded forward, argmax, channel -> class index) on the same
      preprocessed tensor; median and p95 over N runs, the three taking turns so load hits them alike.

    python bench/bench_export.py                       # CamVid's first val image, else a synthetic scene
    python bench/bench_export.py --runs 50 --json var/bench-export.json
    python bench/bench_export.py --compare-exporters
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from bench_segment import ARCH, MODEL, publish_model, street_scene  # noqa: E402
from PIL import Image  # noqa: E402

from services.cli.run import prepare  # noqa: E402
from services.config import load_settings  # noqa: E402
from services.data.transforms import eval_preprocess  # noqa: E402
from services.db.models import ExportFormat  # noqa: E402
from services.db.session import make_engine, make_session_factory  # noqa: E402
from services.inference.export import TRACE_SHAPE, ExportGraph, contract, write_onnx  # noqa: E402
from services.inference.export_cache import export_version  # noqa: E402
from services.inference.predictor import VersionSpec  # noqa: E402
from services.learning.checkpoint import load_model  # noqa: E402
from services.learning.classmap import channels_of  # noqa: E402
from services.registry.models import get_model  # noqa: E402
from services.storage import open_store  # noqa: E402

CAMVID = ROOT.parent / "shared" / "datasets" / "camvid"  # ../shared/datasets/camvid, as the experiments use


def camvid_image() -> tuple[Image.Image, str]:
    images = sorted((CAMVID / "val" / "images").glob("*.jpg"))
    if images:
        return Image.open(images[0]).convert("RGB"), f"CamVid val/images/{images[0].name}"
    return street_scene(480, 360, np.random.default_rng(0)), "synthetic 480x360 scene (CamVid not found)"


def run(image_size: int, runs: int, compare_exporters: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "var")
        prepare(settings)
        model_path, _ = publish_model(settings, image_size, Path(tmp))
        engine = make_engine(settings)
        sessions, store = make_session_factory(engine), open_store(settings)
        with sessions() as s:
            model = get_model(s, MODEL)
        seconds, files = {}, {}
        try:
            for format in (ExportFormat.ONNX, ExportFormat.TORCHSCRIPT, ExportFormat.TRITON, "onnx (cached)"):
                started = time.perf_counter()
                found = export_version(sessions, store, settings.cache_dir, model.id, model.name, 1,
                                       ExportFormat(str(format).split()[0]))
                seconds[str(format)] = round(time.perf_counter() - started, 2)
                files[found.record.format.value] = (found.path, found.record.bytes)
            latency = measure(model_path, files, image_size, runs)
            exporters = compare(model_path, Path(tmp)) if compare_exporters else None
        finally:
            engine.dispose()
    image, source = camvid_image()
    return {"model": ARCH, "image_size": image_size, "input": source, "cpu_threads": torch.get_num_threads(),
            "runs": runs, "export_s": seconds, "bytes": {f: size for f, (_, size) in files.items()},
            "latency": latency, **({"onnx_exporters_s": exporters} if exporters else {})}


def compare(model_path: Path, workdir: Path) -> dict:
    """Seconds to write the ONNX file with each of torch's exporters (no check, no store)."""
    from torch.export import Dim

    loaded = load_model(model_path)
    graph = ExportGraph(loaded.model, channels_of(loaded.class_map))
    meta = contract(VersionSpec(1, MODEL, 1, ARCH, loaded.class_map, 360, "", ""))
    started = time.perf_counter()
    write_onnx(graph, meta, workdir / "torchscript-based.onnx")
    legacy = time.perf_counter() - started
    dims = {0: Dim("batch", min=1, max=64), 2: Dim("height", min=1, max=8192), 3: Dim("width", min=1, max=8192)}
    started = time.perf_counter()
    torch.onnx.export(graph, (torch.zeros(TRACE_SHAPE),), str(workdir / "dynamo.onnx"), dynamo=True,
                      input_names=["image"], output_names=["logits", "mask"], dynamic_shapes={"image": dims})
    return {"torchscript_based": round(legacy, 2), "dynamo": round(time.perf_counter() - started, 2)}


def measure(model_path: Path, files: dict, image_size: int, runs: int) -> dict:
    loaded = load_model(model_path)
    graph = ExportGraph(loaded.model, channels_of(loaded.class_map))
    image, _ = camvid_image()
    x = eval_preprocess(image, image_size)[None]
    session = onnxruntime.InferenceSession(str(files["onnx"][0]), providers=["CPUExecutionProvider"])
    module = torch.jit.load(str(files["torchscript"][0]))

    def pytorch() -> None:
        with torch.inference_mode():
            graph(x)

    def scripted() -> None:
        with torch.inference_mode():
            module(x)

    def ort() -> None:
        session.run(["logits", "mask"], {"image": x.numpy()})

    runners = {"pytorch": pytorch, "onnxruntime": ort, "torchscript": scripted}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for fn in runners.values():  # warm-up
        fn()
    for _ in range(runs):
        for name, fn in runners.items():
            started = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - started) * 1000)
    base = statistics.median(times["pytorch"])
    return {name: {"p50_ms": round(statistics.median(t), 1), "p95_ms": round(float(np.percentile(t, 95)), 1),
                   "ratio_p50": round(statistics.median(t) / base, 3)} for name, t in times.items()}


def print_table(r: dict) -> None:
    print(f"{r['model']}, shorter side {r['image_size']} px, {r['input']}, CPU ({r['cpu_threads']} threads)")
    for format, s in r["export_s"].items():
        size = r["bytes"].get(format.split()[0])
        print(f"  export {format:<16}{s:>8.2f} s   {size / 1e6:.1f} MB" if size else f"  export {format:<16}{s:>8.2f} s")
    print(f"  {'runtime':<23}{'p50 ms':>8}{'p95 ms':>8}{'vs pytorch':>12}")
    for name, v in r["latency"].items():
        print(f"  {name:<23}{v['p50_ms']:>8}{v['p95_ms']:>8}{v['ratio_p50']:>12}")
    if "onnx_exporters_s" in r:
        e = r["onnx_exporters_s"]
        print(f"  ONNX exporters: TorchScript-based {e['torchscript_based']} s, torch.export-based (dynamo) "
              f"{e['dynamo']} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=360, help="the model's shorter side (px); CamVid's is 360")
    p.add_argument("--runs", type=int, default=30, help="timed runs of each runtime")
    p.add_argument("--compare-exporters", action="store_true", help="also time torch's dynamo ONNX exporter")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    result = run(args.image_size, args.runs, args.compare_exporters)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
