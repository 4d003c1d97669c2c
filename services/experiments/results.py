"""An experiment's results: the JSON record of each step and of the run, and the paper-style table."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.data.protocols import Step
from services.evaluation.evaluate import EvalResult
from services.evaluation.metrics import forgetting
from services.experiments.config import ExperimentConfig


@dataclass
class TrainSummary:
    """How one training run went: the loss terms (and their total, "loss") at its first and
    last progress report, and its wall time. A cached base has no losses."""

    images: int
    first: dict[str, float] | None = None
    last: dict[str, float] | None = None
    seconds: float = 0.0
    cached: bool = False

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def step_record(
    step: Step,
    scored: EvalResult,
    names: tuple[str, ...],
    earlier: list[dict[str, float | None]],
    summary: TrainSummary,
) -> dict[str, Any]:
    """One step of the result JSON; IoU values in [0, 1], null where undefined."""
    iou = {names[c]: scored.iou[c] for c in step.classes}
    return {
        "step": step.index,
        "classes": [names[c] for c in step.classes],
        "new_classes": [names[c] for c in step.new_classes],
        "train_images": summary.images,
        "training": summary.as_json(),
        "miou_old": scored.miou_old,
        "miou_new": scored.miou_new,
        "miou_all": scored.miou_all,
        "pixel_accuracy": scored.pixel_accuracy,
        "iou": iou,
        "forgetting": forgetting([*earlier, iou]),
    }


def result_record(config: ExperimentConfig, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole result JSON: what was run, then the steps."""
    return {
        "scenario": config.scenario,
        "protocol": config.protocol,
        "old_labels": config.old_labels,
        "method": config.method,
        "model": config.model,
        "data": str(config.data),
        "image_size": config.image_size,
        "crop_size": config.train_crop,
        "epochs": config.epochs,
        "base_epochs": config.first_epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "base_lr": config.first_lr,
        "seed": config.seed,
        "pretrained": config.pretrained or config.backbone_weights is not None,
        "method_weights": dict(config.method_weights),  # loss weights and ld_form given (else defaults)
        "batchnorm": config.batchnorm,
        "class_balance": config.class_balance,
        "steps": steps,
    }


def write_result(result: dict[str, Any], path: Path) -> None:
    """Write the result JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """A paper-style table: mIoU % old/new/all per step, then per-class IoU % per step."""
    lines = [f"{result['method']} on {result['scenario']} ({result['protocol']}), mIoU %:",
             f"{'step':>4}  {'old':>6} {'new':>6} {'all':>6}  new classes"]
    for s in result["steps"]:
        scores = " ".join(f"{_pct(s[k]):>6}" for k in ("miou_old", "miou_new", "miou_all"))
        lines.append(f"{s['step']:>4}  {scores}  {', '.join(s['new_classes'])}")
    names = result["steps"][-1]["classes"] if result["steps"] else []
    width = max([6, *(len(n) for n in names)])
    lines.append("per-class IoU %:")
    lines.append(f"{'step':>4}  " + " ".join(f"{n:>{width}}" for n in names))
    for s in result["steps"]:
        cells = (_pct(s["iou"][n]) if n in s["iou"] else "" for n in names)  # blank: not yet seen
        lines.append(f"{s['step']:>4}  " + " ".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def step_line(record: dict[str, Any]) -> str:
    """One line per finished step, for the log."""
    t = record["training"]
    how = "cached" if t["cached"] else f"{t['seconds']:.0f}s, loss {t['first']['loss']:.3f} -> {t['last']['loss']:.3f}"
    return (f"step {record['step']} (+{', '.join(record['new_classes'])}; {record['train_images']} images, {how}): "
            f"mIoU old {_pct(record['miou_old'])} new {_pct(record['miou_new'])} all {_pct(record['miou_all'])}")
