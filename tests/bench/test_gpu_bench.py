"""bench/gpu.sh and bench_gpu.py: ready for a lent GPU machine, checked here on the CPU.

The figures are GPU figures; here the script's plumbing is run on tiny sizes (--smoke), its flags are
checked, and the wheels that bench/gpu_wheels.sh downloads for the GPU machine are held to what the API
process imports in this checkout (a new dependency missing there would fail part (d) on the machine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def load_bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bash_array(text: str, name: str) -> set[str]:
    body = re.search(rf"^{name}=\(\n(.*?)^\)", text, re.S | re.M).group(1)
    return {normal(v) for v in body.split()}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# What the API's imports pull in here that it does without: uvicorn imports watchfiles when present
# (for --reload only); the project itself.
OPTIONAL = {"watchfiles", "strata"}
IMPORTS = """
import importlib, importlib.metadata as md, json, sys
sys.path.insert(0, "bench")
for m in ("api.main", "api.http_protocol", "services.cli.run", "services.db.migrate", "bench_segment",
          "uvicorn.main", "uvicorn.protocols.http.h11_impl", "uvicorn.lifespan.on"):
    importlib.import_module(m)
names = md.packages_distributions()
print(json.dumps(sorted({d for top in {n.split(".")[0] for n in sys.modules} for d in names.get(top, [])})))
"""


def test_the_wheels_and_the_gpu_image_cover_what_the_api_imports() -> None:
    script = (ROOT / "bench" / "gpu_wheels.sh").read_text()
    downloaded, on_image = bash_array(script, "NAMES"), bash_array(script, "DEVICE_HAS")
    out = subprocess.run([sys.executable, "-c", IMPORTS], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    imported = {normal(d) for d in json.loads(out)}
    missing = imported - downloaded - on_image - OPTIONAL
    assert not missing, f"add {sorted(missing)} to NAMES in bench/gpu_wheels.sh (or DEVICE_HAS if the GPU image has it)"
    assert not downloaded & on_image
    assert {"fastapi", "pydantic-core", "sqlalchemy", "uvicorn"} <= downloaded


def test_flags_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bench_gpu = load_bench_gpu()
    for flags, message in ((["--parts", "train,speed"], "--parts: speed"),
                           (["--workers", "2,x"], "--workers must be"),
                           (["--budget", "train=0"], "--budget: 'train=0'"),
                           (["--variants", "fp16"], "--variants: fp16"),
                           (["--archs", "unet"], "--archs: unet")):
        with pytest.raises(SystemExit) as exit_:
            bench_gpu.parse_args(["--smoke", "--out", str(tmp_path), *flags])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    args = bench_gpu.parse_args(["--smoke", "--out", str(tmp_path), "--budget", "segment=30", "--workers", "0,2"])
    assert args.budget == {**bench_gpu.BUDGET_S, "segment": 30.0} and args.workers == [0, 2]
    assert args.image_size == 64 and args.archs == ["lraspp_mobilenet_v3_large"]  # the smoke sizes
    if not torch.cuda.is_available():  # the real run says plainly that it needs a GPU
        with pytest.raises(SystemExit):
            bench_gpu.parse_args(["--out", str(tmp_path)])
        assert "no CUDA device here" in capsys.readouterr().err


def test_train_and_teacher_parts_report_ratios(tmp_path: Path) -> None:
    bench_gpu = load_bench_gpu()
    code = bench_gpu.main(["--smoke", "--out", str(tmp_path), "--parts", "train,teacher", "--image-size", "32",
                           "--variants", "fp32,bf16-cl", "--repeats", "2", "--device", "cpu"])
    assert code == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    (row,) = report["parts"]["train"]["rows"]
    ips = row["images_per_s"]
    assert set(ips) == {"fp32", "bf16-cl"} and all(v > 0 for v in ips.values())
    # From the step times (images/s are rounded to 2 decimals, too coarse for slow CPU smoke runs).
    assert row["ratio"]["bf16-cl"] == pytest.approx(row["step_ms"]["fp32"] / row["step_ms"]["bf16-cl"], rel=0.01)
    assert row["precision"] == {"fp32": "float32", "bf16-cl": "float32"}  # autocast is CUDA only
    (teacher,) = report["parts"]["teacher"]["rows"]
    assert teacher["over_ft"]["mib"] == pytest.approx(teacher["step_ms"]["mib"] / teacher["step_ms"]["ft"], rel=0.01)
    md = (tmp_path / "gpu.md").read_text()
    assert "## (a) train images/s" in md and "## (b) the teacher's overhead" in md and "SMOKE" in md


@pytest.mark.slow
def test_gpu_sh_smoke_runs_every_part(tmp_path: Path) -> None:
    """The script as the device tool runs it, on tiny sizes: every part measures something."""
    done = subprocess.run(["bash", "bench/gpu.sh", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "BENCH_OUT": str(tmp_path), "PY": sys.executable})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    parts = report["parts"]
    assert set(parts) == {"train", "teacher", "pipeline", "segment"}
    assert not [name for name, p in parts.items() if "error" in p]
    assert all("images_per_s" in r for r in parts["train"]["rows"])
    runs = {r["run"]: r for r in parts["pipeline"]["rows"]}
    assert runs["loader, 1 workers"]["images_per_s"] > 0 and "over_preloaded" in runs["loader, 1 workers"]
    if hasattr(load_bench_gpu().SegmentationDataset, "preload"):
        assert runs["loader + decoded cache, 1 workers"]["images_per_s"] > 0
    (segment,) = parts["segment"]["rows"]
    assert segment["latency"]["segment_ms"]["p50"] > 0 and segment["throughput"]["segment_requests_per_s"] > 0
    assert (tmp_path / "segment-lraspp_mobilenet_v3_large.json").is_file() and (tmp_path / "env.txt").is_file()
    assert "| lraspp_mobilenet_v3_large |" in (tmp_path / "gpu.md").read_text()
    assert "bench/gpu.sh: exit 0" in (tmp_path / "gpu.log").read_text()
