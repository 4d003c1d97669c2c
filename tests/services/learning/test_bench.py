"""The training benchmarks run end to end on a tiny configuration and report sane numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from services.cli.main import main

ROOT = Path(__file__).resolve().parents[3]


def test_strata_bench_train_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "train", "--model", "lraspp_mobilenet_v3_large", "--method", "ld", "--image-size", "32",
                 "--batch-size", "2", "--steps", "2", "--warmup", "1", "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "ld" and result["device"] == "cpu" and result["precision"] == "float32"
    assert 0 < result["step_ms_min"] <= result["step_ms_median"] <= result["step_ms_max"]
    assert result["images_per_s"] == pytest.approx(2 / (result["step_ms_median"] / 1000), rel=1e-2)


def test_strata_bench_train_names_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", "--image-size", "8", "--device", "cpu"]) == 2
    assert "image_size >= 32" in capsys.readouterr().err


def test_bench_train_script_reports_ratios() -> None:
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "bench_train.py")
    bench_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_train)
    report = bench_train.run(image_size=32, batch_size=2, steps=1, warmup=1, repeats=1, device="cpu",
                             methods=("ld", "ld+le"))
    assert set(report["step_ms_median"]) == {"bare", "ft", "ld", "ld+le"}
    ms = report["step_ms_median"]
    assert report["distillation_over_ft"]["ld"] == pytest.approx(ms["ld"] / ms["ft"], rel=1e-2)
    assert report["trainer_over_bare"] == pytest.approx(ms["ft"] / ms["bare"], rel=1e-2)
    with pytest.raises(ValueError, match="unknown methods"):
        bench_train.run(methods=("lwf",), device="cpu")
