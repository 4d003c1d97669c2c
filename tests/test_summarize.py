"""experiments/summarize.py: seed means and spreads, variants, recipes, share of joint, the plot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "summarize.py"
spec = importlib.util.spec_from_file_location("summarize", SCRIPT)
summarize = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summarize)


def result(method: str, seed: int, steps: list[tuple], final_iou: dict, scenario: str = "2-1", **settings) -> dict:
    """A result JSON as `strata experiment` writes it; ``steps``: (old, new, all) mIoU per step."""
    names = ["background", "A", "B", "C"]
    records = []
    for k, (old, new, all_) in enumerate(steps):
        classes = names[: 3 + k]
        iou = final_iou if k == len(steps) - 1 else {n: 0.5 for n in classes}
        records.append({"step": k, "classes": classes, "new_classes": classes[1:] if k == 0 else [classes[-1]],
                        "miou_old": old, "miou_new": new, "miou_all": all_, "iou": iou, "forgetting": {},
                        "training": {"images": 4, "first": None, "last": None, "seconds": 1.0, "cached": False}})
    return {"scenario": scenario, "protocol": "overlapped", "old_labels": "drop", "method": method,
            "model": "lraspp_mobilenet_v3_large", "data": "/data/camvid", "image_size": 160, "crop_size": 96,
            "epochs": 10, "base_epochs": 30, "batch_size": 8, "lr": 0.01, "base_lr": 0.05, "seed": seed,
            "pretrained": False, "method_weights": {}, "batchnorm": "recalibrate", "class_balance": 0.5,
            **settings, "steps": records}


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    runs = {
        "2-1_mib_s0": result("mib", 0, [(None, 0.5, 0.5), (0.60, 0.10, 0.50)],
                             {"background": None, "A": 0.8, "B": 0.2, "C": 0.5}),
        "2-1_mib_s1": result("mib", 1, [(None, 0.5, 0.5), (0.62, 0.14, 0.54)],
                             {"background": None, "A": 0.7, "B": 0.3, "C": None}),
        "2-1_joint_s0": result("joint", 0, [(None, 0.5, 0.5), (0.70, 0.40, 0.65)],
                               {"background": None, "A": 0.9, "B": 0.5, "C": 0.4}),
        "2-1_ld_s0_keep": result("ld", 0, [(None, 0.5, 0.5), (0.55, 0.05, 0.45)],
                                 {"background": None, "A": 0.6, "B": 0.1, "C": 0.05}, old_labels="keep"),
        "2-1_ft_s0_bn": result("ft", 0, [(None, 0.5, 0.5), (0.0, 0.30, 0.13)],
                               {"background": None, "A": 0.0, "B": 0.0, "C": 0.3}, batchnorm="frozen",
                               method_weights={"lambda_d": 10}),
        "big": result("ft", 0, [(None, 0.40, 0.40)], {"background": None, "A": 0.4}, scenario="11", image_size=160),
        "small": result("ft", 0, [(None, 0.44, 0.44)], {"background": None, "A": 0.44}, scenario="11",
                        image_size=96, crop_size=96),
    }
    for name, run in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    (tmp_path / "notes.json").write_text("[]")  # not a result: skipped
    return tmp_path


def scenario_text(out: str, scenario: str) -> str:
    return out.split(f"### {scenario} ")[1].split("### ")[0]


def table_row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_seed_means_spreads_variants_and_share_of_joint(results_dir, capsys):
    assert summarize.main([str(results_dir)]) == 0
    out = capsys.readouterr().out
    assert out.index("### 2-1 ") < out.index("### 11 ")  # scenarios in numeric order
    text = scenario_text(out, "2-1")
    assert text.startswith("(overlapped), step 0 mIoU 50.0\n")
    assert "Recipe: dataset camvid, model lraspp_mobilenet_v3_large, pretrained no, image_size/crop_size 160/96, " \
           "class_balance 0.5, epochs/base_epochs 10/30, lr/base_lr 0.01/0.05, batch_size 8" in text

    labels = [line.split(" | ")[0][2:] for line in text.split("Per-class")[0].splitlines() if line.startswith("| ")]
    assert labels == ["method", "mib (seeds 0, 1)", "joint (seed 0)", "ft (lambda_d=10; batchnorm frozen; seed 0)",
                      "ld (old labels kept; seed 0)"]
    assert table_row(text, "mib (seeds 0, 1)") == ["61.0±1.0 / 12.0±2.0 / 52.0±2.0"]
    assert table_row(text, "joint (seed 0)") == ["70.0 / 40.0 / 65.0"]

    per_class = text.split("Per-class IoU % after step 1 (mean over seeds):")[1]
    assert "| method | A | B | C |" in per_class  # background: null everywhere, left out
    assert table_row(per_class, "mib (seeds 0, 1)") == ["75.0", "25.0", "50.0"]  # C: the one seed with a value

    shares = next(line for line in text.splitlines() if line.startswith("Final all-class mIoU as a share"))
    assert shares == ("Final all-class mIoU as a share of joint's (joint (seed 0) 65.0): mib (seeds 0, 1): 80.0 %; "
                      "ft (lambda_d=10; batchnorm frozen; seed 0): 20.0 %; ld (old labels kept; seed 0): 69.2 %")


def test_recipes_that_differ_label_the_rows(results_dir, capsys):
    summarize.main([str(results_dir)])
    text = scenario_text(capsys.readouterr().out, "11")
    assert text.startswith("(overlapped), step 0 mIoU 40.0-44.0 (see column step 0)\n")
    assert "image_size/crop_size 96/96 or 160/96 (see rows)" in text
    assert table_row(text, "ft (image_size/crop_size 96/96)") == ["44.0"]
    assert table_row(text, "ft (image_size/crop_size 160/96)") == ["40.0"]
    assert "share of joint" not in text  # no joint run


def test_empty_directory_fails(tmp_path, capsys):
    assert summarize.main([str(tmp_path)]) == 1
    assert "no `strata experiment` results" in capsys.readouterr().err


def test_plot_writes_a_png(results_dir, tmp_path, capsys):
    # matplotlib is the optional `experiments` extra, which `make install` (and so CI) installs.
    png = tmp_path / "plot.png"
    assert summarize.main([str(results_dir), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### 2-1 " in capsys.readouterr().out
