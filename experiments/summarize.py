"""Markdown tables (and optionally a plot) of `strata experiment` results.

Usage: python experiments/summarize.py DIR [--plot PNG]

Reads every *.json result in DIR and prints, per scenario: mIoU % old / new / all after each step,
one row per method (runs that differ only by seed are one row: their mean, then ± half their range);
per-class IoU % after the last step; each method's final all-class mIoU as a share of joint's.
Runs whose settings differ (old labels kept, loss weights, batch-norm policy, or the recipe) are
separate rows, labelled with what sets them apart. --plot writes all-class mIoU per step, one
panel per scenario (needs matplotlib: the `experiments` extra).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

METHODS = ("ft", "ld", "le", "ef", "ef+ld", "ld+le", "mib", "plop", "frozen-old", "joint")
DATASETS = {"camvid": "CamVid", "voc": "Pascal VOC", "pascal_voc": "Pascal VOC"}
# The recipe of a run: (name shown, the result keys it is made of).
RECIPE = (
    ("dataset", ("dataset",)),
    ("protocol", ("protocol",)),
    ("model", ("model",)),
    ("pretrained", ("pretrained",)),
    ("image_size/crop_size", ("image_size", "crop_size")),
    ("class_balance", ("class_balance",)),
    ("epochs/base_epochs", ("epochs", "base_epochs")),
    ("lr/base_lr", ("lr", "base_lr")),
    ("batch_size", ("batch_size",)),
)


# --- reading -------------------------------------------------------------------------------------


def load_results(directory: str | Path) -> list[dict]:
    """Every result JSON in ``directory``, with defaults filled in for keys older results lack."""
    results = []
    for path in sorted(Path(directory).glob("*.json")):
        result = json.loads(path.read_text())
        if not isinstance(result, dict) or "steps" not in result or "scenario" not in result:
            continue  # not a `strata experiment` result
        result["path"] = path
        result["dataset"] = Path(result["data"]).name if result.get("data") else None
        result.setdefault("seed", 0)
        result.setdefault("batchnorm", "recalibrate")
        result.setdefault("class_balance", 0.0)
        if result.get("crop_size") is None:
            result["crop_size"] = result.get("image_size")
        if result.get("base_epochs") is None:
            result["base_epochs"] = result.get("epochs")
        if result.get("base_lr") is None:
            result["base_lr"] = result.get("lr")
        results.append(result)
    return results


def recipe(result: dict) -> dict[str, str]:
    """The recipe of a run, one readable value per RECIPE entry."""
    def show(value: object) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    return {name: "/".join(show(result.get(key)) for key in keys) for name, keys in RECIPE}


def variant(result: dict) -> list[str]:
    """What sets a run apart from the plain method, besides its recipe."""
    extras = []
    if result.get("old_labels") == "keep":
        extras.append("old labels kept")
    weights = result.get("method_weights")
    if weights:
        extras.append(", ".join(f"{k}={v}" for k, v in sorted(weights.items())))
    if result["batchnorm"] != "recalibrate":
        extras.append(f"batchnorm {result['batchnorm']}")
    return extras


def natural_key(text: str) -> tuple:
    """Sort 5-1 < 8-1 < 8-3 < 11 < 15-5s (and 96/96 < 160/96): by the numbers in the text, then the text."""
    return tuple(float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)), text


def method_key(method: str) -> tuple[int, str]:
    return (METHODS.index(method) if method in METHODS else len(METHODS)), method


def group_rows(results: list[dict]) -> dict[str, list[dict]]:
    """Scenario -> its table rows, in order. A row holds the runs that differ only by seed:
    {"method", "variant", "recipe", "runs", "seeds", "label"}."""
    by_scenario: dict[str, list[dict]] = {}
    for result in results:
        by_scenario.setdefault(result["scenario"], []).append(result)
    grouped = {}
    for scenario in sorted(by_scenario, key=natural_key):
        runs = by_scenario[scenario]
        recipes = [recipe(r) for r in runs]
        differing = [name for name, _ in RECIPE if len({rec[name] for rec in recipes}) > 1]
        rows: dict[tuple, dict] = {}
        for run, rec in zip(runs, recipes):
            extras = variant(run)
            key = (run["method"], tuple(extras), tuple(rec.values()))
            row = rows.setdefault(key, {"method": run["method"], "variant": extras, "recipe": rec, "runs": []})
            row["runs"].append(run)
        for row in rows.values():
            row["runs"].sort(key=lambda r: r["seed"])
            row["seeds"] = [r["seed"] for r in row["runs"]]
            if len(set(row["seeds"])) < len(row["seeds"]):
                paths = ", ".join(r["path"].name for r in row["runs"])
                print(f"warning: {scenario}: runs with the same settings and seed, all averaged: {paths}",
                      file=sys.stderr)
        seed_sets = {tuple(row["seeds"]) for row in rows.values()}
        for row in rows.values():
            parts = list(row["variant"]) + [f"{name} {row['recipe'][name]}" for name in differing]
            if len(row["seeds"]) > 1 or len(seed_sets) > 1:
                parts.append(("seeds " if len(row["seeds"]) > 1 else "seed ") + ", ".join(map(str, row["seeds"])))
            row["label"] = row["method"] + (f" ({'; '.join(parts)})" if parts else "")
        grouped[scenario] = sorted(rows.values(), key=lambda row: (bool(row["variant"]), method_key(row["method"]),
                                                                   natural_key(row["label"])))
    return grouped


# --- numbers -------------------------------------------------------------------------------------


def step_values(row: dict, step: int, key: str) -> list[float]:
    """``key`` (e.g. miou_all) at step ``step`` of each of the row's runs that has it (non-null)."""
    return [r["steps"][step][key] for r in row["runs"] if step < len(r["steps"]) and r["steps"][step][key] is not None]


def final_values(row: dict, key: str) -> list[float]:
    """``key`` after the last step of each run."""
    return [r["steps"][-1][key] for r in row["runs"] if r["steps"] and r["steps"][-1][key] is not None]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def mean_spread(values: list[float]) -> str:
    """Mean in %, one decimal; with several values, then ± half their range: "57.1±0.4"."""
    if not values:
        return "-"
    text = f"{100 * mean(values):.1f}"
    return text + (f"±{100 * (max(values) - min(values)) / 2:.1f}" if len(values) > 1 else "")


# --- tables --------------------------------------------------------------------------------------


def step0_text(rows: list[dict]) -> tuple[str, bool]:
    """The heading's step-0 all-class mIoU, and whether rows disagree on it (then a column shows it)."""
    means = sorted({round(100 * m, 1) for row in rows if (m := mean(step_values(row, 0, "miou_all"))) is not None})
    if not means:
        return "-", False
    if len(means) == 1:
        return f"{means[0]:.1f}", False
    return f"{means[0]:.1f}-{means[-1]:.1f} (see column step 0)", True


def recipe_line(rows: list[dict]) -> str:
    """The recipe of a scenario's runs; a setting the runs disagree on lists its values."""
    parts = []
    for name, _ in RECIPE:
        values = sorted({row["recipe"][name] for row in rows}, key=natural_key)
        if name == "protocol" and len(values) == 1:
            continue  # in the heading
        parts.append(f"{name} {values[0]}" if len(values) == 1 else f"{name} {' or '.join(values)} (see rows)")
    return "Recipe: " + ", ".join(parts)


def miou_table(rows: list[dict], with_step0: bool = False) -> str:
    """mIoU % old / new / all per step k >= 1 (and step 0's all-class mIoU when asked), one row per row."""
    steps = max(len(r["steps"]) for row in rows for r in row["runs"])
    step0 = with_step0 or steps == 1
    heads = (["step 0 all"] if step0 else []) + [f"step {k} old / new / all" for k in range(1, steps)]
    lines = ["| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for row in rows:
        cells = [mean_spread(step_values(row, 0, "miou_all"))] if step0 else []
        for k in range(1, steps):
            values = (step_values(row, k, key) for key in ("miou_old", "miou_new", "miou_all"))
            cells.append(" / ".join(mean_spread(v) for v in values))
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def final_iou(row: dict) -> dict[str, float | None]:
    """Per-class IoU after the last step, mean over the row's runs (null where no run has a value)."""
    names: dict[str, list[float]] = {}
    for r in row["runs"]:
        for name, value in r["steps"][-1]["iou"].items():
            names.setdefault(name, [])
            if value is not None:
                names[name].append(value)
    return {name: mean(values) for name, values in names.items()}


def class_table(rows: list[dict]) -> str:
    """Per-class IoU % after the last step (seed means), one column per class."""
    ious = [final_iou(row) for row in rows]
    classes: list[str] = []
    for iou in ious:
        classes += [name for name in iou if name not in classes]
    if all(iou.get("background") is None for iou in ious):
        classes = [name for name in classes if name != "background"]
    lines = ["| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for row, iou in zip(rows, ious):
        cells = ("-" if iou.get(name) is None else f"{100 * iou[name]:.1f}" for name in classes)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def joint_for(row: dict, rows: list[dict]) -> dict | None:
    """The joint row to compare ``row`` with: same recipe, preferably the same variant, else plain."""
    joints = [j for j in rows if j["method"] == "joint" and j["recipe"] == row["recipe"]]
    for wanted in (row["variant"], []):
        for j in joints:
            if j["variant"] == wanted:
                return j
    return joints[0] if joints else None


def joint_shares(rows: list[dict]) -> str | None:
    """Each non-joint row's final all-class mIoU (seed mean) as a share of joint's, or None without joint."""
    parts = []
    joints_used = []
    for row in rows:
        joint = joint_for(row, rows)
        if row["method"] == "joint" or joint is None:
            continue
        mine, theirs = mean(final_values(row, "miou_all")), mean(final_values(joint, "miou_all"))
        if mine is None or not theirs:
            continue
        parts.append(f"{row['label']}: {100 * mine / theirs:.1f} %")
        if joint not in joints_used:
            joints_used.append(joint)
    if not parts:
        return None
    basis = ", ".join(f"{j['label']} {100 * mean(final_values(j, 'miou_all')):.1f}" for j in joints_used)
    return f"Final all-class mIoU as a share of joint's ({basis}): " + "; ".join(parts)


def protocol_text(rows: list[dict]) -> str:
    protocols = {row["recipe"]["protocol"] for row in rows}
    return f" ({protocols.pop()})" if len(protocols) == 1 else ""


def scenario_markdown(scenario: str, rows: list[dict]) -> str:
    """Everything printed for one scenario."""
    step0, differs = step0_text(rows)
    last = max(len(r["steps"]) for row in rows for r in row["runs"]) - 1
    several = any(len(row["runs"]) > 1 for row in rows)
    parts = [
        f"### {scenario}{protocol_text(rows)}, step 0 mIoU {step0}",
        recipe_line(rows),
        ("mIoU %, old / new / all" + (", mean±half the range over seeds" if several else "") + ":"),
        miou_table(rows, with_step0=differs),
        f"Per-class IoU % after step {last}" + (" (mean over seeds)" if several else "") + ":",
        class_table(rows),
    ]
    shares = joint_shares(rows)
    if shares:
        parts.append(shares)
    return "\n\n".join(parts) + "\n"


# --- plot ----------------------------------------------------------------------------------------


def plot(grouped: dict[str, list[dict]], path: str | Path) -> None:
    """One panel per scenario: all-class mIoU % per step, one line per row (seed mean, band: ± half range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(row["label"] for rows in grouped.values() for row in rows))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colors = {label: cmap(i % cmap.N) for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, len(grouped), figsize=(4.5 * len(grouped), 4), squeeze=False, sharey=True)
    for ax, (scenario, rows) in zip(axes[0], grouped.items()):
        for row in rows:
            steps = max(len(r["steps"]) for r in row["runs"])
            xs = [k for k in range(steps) if step_values(row, k, "miou_all")]
            values = [step_values(row, k, "miou_all") for k in xs]
            ys = [100 * mean(v) for v in values]
            style = "--" if row["variant"] else "-"
            ax.plot(xs, ys, style, marker="o", markersize=3, color=colors[row["label"]], label=row["label"])
            if len(row["runs"]) > 1:
                half = [100 * (max(v) - min(v)) / 2 for v in values]
                ax.fill_between(xs, [y - h for y, h in zip(ys, half)], [y + h for y, h in zip(ys, half)],
                                color=colors[row["label"]], alpha=0.2, linewidth=0)
        datasets = {row["recipe"]["dataset"] for row in rows}
        dataset = DATASETS.get(next(iter(datasets)), next(iter(datasets))) if len(datasets) == 1 else ""
        ax.set_title(f"{dataset} {scenario}".strip())
        ax.set_xlabel("step")
        ax.set_xticks(range(max(len(r["steps"]) for row in rows for r in row["runs"])))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("all-class mIoU (%)")
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# --- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="var/results/camvid", help="folder of result *.json")
    parser.add_argument("--plot", metavar="PNG", help="also write all-class mIoU per step to this PNG")
    args = parser.parse_args(argv)
    results = load_results(args.directory)
    if not results:
        print(f"no `strata experiment` results (*.json) in {args.directory}", file=sys.stderr)
        return 1
    grouped = group_rows(results)
    print("\n".join(scenario_markdown(scenario, rows) for scenario, rows in grouped.items()), end="")
    if args.plot:
        plot(grouped, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
