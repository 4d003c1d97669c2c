"""Markdown tables of `strata experiment` results: python experiments/summarize.py DIR."""

from __future__ import annotations

import json
import sys
from pathlib import Path

METHODS = ("ft", "ld", "le", "ef", "ef+ld", "ld+le", "mib", "joint")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def label(result: dict, path: Path) -> str:
    """The method, plus what sets this run apart (taken from the result, or its file name)."""
    extras = []
    if result.get("old_labels") == "keep":
        extras.append("old labels kept")
    weights = result.get("method_weights")
    if weights:
        extras.append(", ".join(f"{k}={v}" for k, v in sorted(weights.items())))
    elif weights is None and path.stem.count("_") > 1 and result.get("old_labels") != "keep":
        extras.append(path.stem.split("_", 2)[2])
    return result["method"] + (f" ({'; '.join(extras)})" if extras else "")


def scenario_table(results: list[dict]) -> str:
    steps = len(results[0]["steps"])
    head = "| method | " + " | ".join(f"step {k} old/new/all" for k in range(1, steps)) + " | final per-class IoU |"
    lines = [head, "|" + "---|" * (steps + 1)]
    for r in results:
        cells = [f"{pct(s['miou_old'])} / {pct(s['miou_new'])} / {pct(s['miou_all'])}" for s in r["steps"][1:]]
        final = r["steps"][-1]["iou"]
        per_class = ", ".join(f"{k} {pct(v)}" for k, v in final.items() if k != "background")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {per_class} |")
    return "\n".join(lines)


def main(directory: str) -> None:
    by_scenario: dict[str, list[dict]] = {}
    for path in sorted(Path(directory).glob("*.json")):
        result = json.loads(path.read_text())
        result["label"] = label(result, path)
        by_scenario.setdefault(result["scenario"], []).append(result)
    for scenario, results in sorted(by_scenario.items()):
        results.sort(key=lambda r: (r["label"] != r["method"], METHODS.index(r["method"]) if r["method"] in METHODS else 99))
        base = results[0]["steps"][0]
        print(f"### {scenario} ({results[0]['protocol']}), step 0 mIoU {pct(base['miou_all'])}\n")
        print(scenario_table(results) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "var/results/camvid")
