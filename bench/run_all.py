"""Every CPU benchmark in one run, and one markdown table of their headline figures (`make bench`).

Each benchmark below runs as a subprocess with its own flags (``--quick``: small sizes and repeats,
about 10 minutes for all of them on 2 quiet cores; without it: the commands docs/results.md quotes, an hour
or more) and a timeout. Its JSON goes to OUT/NAME.json and its output to OUT/NAME.log; an extractor
per benchmark turns the JSON into rows of
  | benchmark | figure | Strata | bare baseline | ratio | aim | met? | command |
where the ratio is Strata's figure over the baseline measured in the same run (for a throughput,
higher is better; for a time, lower). The table is printed and written to OUT/results.md. A benchmark
that fails (exit status, timeout, no JSON, an extractor error) gets a row saying so, never a missing
row, and the runner then exits 1. The GPU benchmark (bench/gpu.sh, bench_gpu.py) is not run here.

    .venv/bin/python bench/run_all.py --quick                        # what `make bench` runs
    .venv/bin/python bench/run_all.py --quick --only segment-128,webhooks
    .venv/bin/python bench/run_all.py                                # docs/results.md's commands

Adding a benchmark is one entry of BENCHES: its script, its quick and full flags, its extractor.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    figure: str
    strata: str = ""
    bare: str = ""
    ratio: float | None = None
    aim: str = ""
    met: bool | None = None


def measured(figure: str, strata: str, bare: str = "", ratio: float | None = None, *,
             at_most: float | None = None, at_least: float | None = None) -> Row:
    """A row whose aim, if any, bounds its ratio."""
    if at_most is not None:
        return Row(figure, strata, bare, ratio, f"<= {at_most:g}", ratio is not None and ratio <= at_most)
    if at_least is not None:
        return Row(figure, strata, bare, ratio, f">= {at_least:g}", ratio is not None and ratio >= at_least)
    return Row(figure, strata, bare, ratio)


# The aims, as the issues set them (docs/results.md quotes each with its figures).
TRAINER_OVER_BARE = 1.1        # issue 3: our trainer's ft step / a bare PyTorch loop's
LD_OVER_FT = 1.4               # issue 3: a distillation (ld) step / an ft step
SEGMENT_P50 = 1.2              # issues 4 and 14: /segment p50 / the bare forward, at 128 and 256 px
SEGMENT_THROUGHPUT = 0.8       # issue 4: 16-client /segment throughput / the bare batched forward (bench_segment)
SERVING_THROUGHPUT = 0.9       # issue 14: 16-client /segment throughput / the best bare pipeline (bench_serving)
TIME_TO_VERSION = 1.15         # issue 14: POST /tasks to a recorded version / a bare loop over decoded images


# --- extractors: a benchmark's JSON -> rows ---------------------------------------------------------------
def train(r: dict) -> list[Row]:
    ms = r["step_ms_median"]
    what = f"{r['model']}, batch {r['batch_size']} x {r['image_size']} px"
    rows = [measured(f"training step, our trainer (ft) / bare loop ({what})", f"{ms['ft']:.1f} ms",
                     f"{ms['bare']:.1f} ms", r["trainer_over_bare"], at_most=TRAINER_OVER_BARE)]
    for method, ratio in r["distillation_over_ft"].items():
        rows.append(measured(f"training step, {method} / ft", f"{ms[method]:.1f} ms", f"ft {ms['ft']:.1f} ms", ratio,
                             at_most=LD_OVER_FT if method == "ld" else None))
    return rows


def segment(r: dict) -> list[Row]:
    lat, thr, px, aims = r["latency"], r["throughput"], r["image_size"], r.get("aims", {})
    return [
        measured(f"/segment latency p50, one client, {px} px", f"{lat['segment_ms']['p50']} ms",
                 f"{lat['bare_ms']['p50']} ms", lat["ratio_p50"],
                 at_most=aims.get("latency_ratio_p50_max", SEGMENT_P50)),
        measured(f"/segment latency p95, one client, {px} px", f"{lat['segment_ms']['p95']} ms",
                 f"{lat['bare_ms']['p95']} ms", lat["ratio_p95"]),
        measured(f"/segment throughput, {r['clients']} clients, {px} px (mean batch {thr['mean_server_batch']})",
                 f"{thr['segment_requests_per_s']} img/s", f"{thr['bare_images_per_s']} img/s", thr["ratio"],
                 at_least=aims.get("throughput_ratio_min", SEGMENT_THROUGHPUT)),
    ]


def serving(r: dict) -> list[Row]:
    rows = []
    for x in r["sizes"]:
        lat, ips, q, px = x["latency_ms"], x["images_per_s"], x["ratios"], x["image_size"]
        rows += [measured(f"/segment latency p50, one client, {px} px / the bare pipeline (decode to PNG)",
                          f"{lat['strata']['p50']:.1f} ms", f"{lat['bare']['p50']:.1f} ms", q["strata/bare p50"],
                          at_most=SEGMENT_P50),
                 measured(f"/segment throughput, {r['clients']} clients, {px} px / the best bare pipeline",
                          f"{ips['strata']} img/s", f"{x['best_bare_images_per_s']} img/s", q["strata/bare throughput"],
                          at_least=SERVING_THROUGHPUT)]
        if "torchserve" in lat:  # the baseline here is TorchServe serving the same file: aim, beat it
            p50, thr = q["strata/torchserve p50"], q["strata/torchserve throughput"]
            rows += [Row(f"/segment latency p50, one client, {px} px / TorchServe's", f"{lat['strata']['p50']:.1f} ms",
                         f"TorchServe {lat['torchserve']['p50']:.1f} ms", p50, "< 1", p50 < 1),
                     Row(f"/segment throughput, {r['clients']} clients, {px} px / TorchServe's",
                         f"{ips['strata']} img/s", f"TorchServe {ips['torchserve']} img/s", thr, "> 1", thr > 1)]
        rows.append(Row(f"masks equal to the bare pipeline's, {px} px", ", ".join(
            f"{k} {'yes' if v else 'NO'}" for k, v in x["masks_identical"].items()), aim="all equal",
            met=all(x["masks_identical"].values())))
    return rows


def torch_thread(r: dict) -> list[Row]:
    ms = r["median_ms"]
    return [measured(f"a forward on another thread / on the thread that warmed the model up ({r['image_size']} px, "
                     f"batch 1)", f"{ms['other']:.1f} ms", f"{ms['same']:.1f} ms", ms["other"] / ms["same"])]


def time_to_version(r: dict) -> list[Row]:
    what = f"{r['images']} {r['data']} images x {r['epochs']} epochs, {r['image_size']} px"
    return [measured(f"POST /tasks to a recorded version ({what}; loader workers {x.get('workers')}, "
                     f"cache {'on' if x.get('cache') else 'off'})", f"{x['to_version_s']:.1f} s",
                     f"{x['bare_s']:.1f} s", x["ratio"], at_most=TIME_TO_VERSION) for x in r["rounds"]]


def ingest(r: dict) -> list[Row]:
    rss = r["rss_mb"]
    return [measured(f"POST /tasks -> 202, {r['images']} images ({r['upload_mb']} MB, {r['mode']})",
                     f"{r['ingest_s']} s", f"{r['bare_copy_hash_s']} s (copy + sha256)",
                     r["ingest_s"] / r["bare_copy_hash_s"]),
            measured("API memory growth during that upload",
                     f"{rss['growth']} MB ({rss['growth_per_upload']} x upload)")]


def import_(r: dict) -> list[Row]:
    base = next(x["seconds"] for x in r["rows"] if x["format"] == "masks")
    return [Row(f"reading a {x['format']} export, {r['images']} images", f"{x['seconds']:.2f} s",
                f"masks {base:.2f} s", x["ratio"], "reads back exactly", x["exact"]) for x in r["rows"]]


def answers(r: dict) -> list[Row]:
    png = next(x for x in r["rows"] if x["answer"] == "png")
    return [measured(f"/segment answer `{x['answer']}`, encoding only ({r['images']} CamVid masks)",
                     f"{x['ms']:.2f} ms, {x['kb']} KB", f"png {png['ms']:.2f} ms, {png['kb']} KB", x["ratio"])
            for x in r["rows"] if x["answer"] != "png"]


def export(r: dict) -> list[Row]:
    pytorch = r["latency"]["pytorch"]
    rows = [measured(f"one image through the {name} export, p50 ({r['image_size']} px)", f"{x['p50_ms']} ms",
                     f"PyTorch {pytorch['p50_ms']} ms", x["ratio_p50"])
            for name, x in r["latency"].items() if name != "pytorch"]
    return rows + [measured("exporting a version to ONNX (service path)", f"{r['export_s']['onnx']} s")]


def models(r: dict) -> list[Row]:
    one, two = r["workers_1"]["wall_s"], r["workers_2"]["wall_s"]
    b1, b2 = r["serving_max_loaded_1"]["p50_ms"], r["serving_max_loaded_2"]["p50_ms"]
    return [measured(f"two models' tasks on two workers / one ({r['images_per_model']} images, {r['epochs']} epochs, "
                     f"worker threads {r['worker_threads'] or 'unset'})", f"{two} s", f"{one} s (one worker)",
                     r["training_ratio_two_over_one"]),
            measured("/segment alternating two models, p50: room for one loaded / for both", f"{b1} ms",
                     f"{b2} ms", r["serving_ratio_budget_1_over_2"])]


def dashboard(rows: list) -> list[Row]:
    return [measured(f"forgetting view, {x['versions']} versions: the page / its data alone", f"{x['page_s']:.3f} s",
                     f"{x['data_s']:.3f} s", x["page_over_data"]) for x in rows]


def quickstart(r: dict) -> list[Row]:
    rows = []
    for x in r.get("defaults", []):
        if [x["architecture"], x["image_size"]] == r["default"]:
            paper = r["defaults"][0]
            rows.append(measured(f"training images/s, the default {x['architecture']} at {x['image_size']} px / the "
                                 f"papers' network", f"{x['images_per_s']} img/s",
                                 f"{paper['architecture']} at {paper['image_size']} px {paper['images_per_s']} img/s",
                                 x["speed_vs_paper"]))
    if "demo" in r:
        d, last = r["demo"], r["demo"]["versions"][-1]
        rows.append(measured(f"`strata demo` end to end ({len(d['versions'])} versions; the last one's mIoU all "
                             f"{last['all']})", f"{d['demo_s']} s"))
    return rows


def reliability(r: dict) -> list[Row]:
    b, p, q, s = r["baseline"], r["promotion"], r["ratios"], r["swaps"]
    every = f"production moved every {r['promote_every_s']:g} s, {r['clients']} clients"
    return [*(measured(f"/segment latency {k[:3]}, {every} / no moves", f"{p[k]} ms", f"{b[k]} ms", q[k])
              for k in ("p50_ms", "p99_ms")),
            measured(f"/segment throughput, {every} / no moves", f"{p['requests_per_s']} req/s",
                     f"{b['requests_per_s']} req/s", q["requests_per_s"]),
            Row(f"errors / wrong masks / failed promotions ({s['moves']} moves)",
                f"{b['errors'] + p['errors']} / {b['wrong_masks'] + p['wrong_masks']} / {s['failed_moves']}",
                aim="none", met=not r["failed"])]


def webhooks(r: dict) -> list[Row]:
    lat = r["latency_ms"]
    return [measured(f"{r['events']} webhook deliveries through the outbox ({r['database']})", f"{r['outbox_s']} s",
                     f"{r['bare_s']} s (sign + POST loop)", r["ratio"]),
            measured(f"webhook commit to arrival, polling every {r['poll_s']:g} s: p50 / p95",
                     f"{lat['p50']:.0f} / {lat['p95']:.0f} ms")]


# --- the benchmarks -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bench:
    script: str                       # under bench/ (or an absolute path)
    quick: list[str]                  # flags with --quick
    full: list[str]                   # flags otherwise: the command docs/results.md quotes
    extract: Callable[..., list[Row]]
    timeout_s: tuple[int, int] = (600, 3600)   # quick, full
    json_on_stdout: bool = False      # `--json` prints the JSON (else `--json PATH` writes it)


BENCHES: dict[str, Bench] = {
    "train": Bench("bench_train.py", ["--threads", "1", "--repeats", "2", "--steps", "3"],
                   ["--threads", "1", "--repeats", "3"], train, (400, 1200), json_on_stdout=True),
    "segment-128": Bench("bench_segment.py", ["--image-size", "128", "--requests", "60", "--rounds", "3",
                                              "--seconds", "5"], ["--image-size", "128"], segment, (400, 1200)),
    "segment-256": Bench("bench_segment.py", ["--image-size", "256", "--requests", "60", "--rounds", "3",
                                              "--seconds", "5"], ["--image-size", "256"], segment, (400, 1200)),
    "serving": Bench("bench_serving.py", ["--requests", "40", "--rounds", "3", "--seconds", "4"], [], serving,
                     (900, 2400)),
    "torch_thread": Bench("bench_torch_thread.py", ["--runs", "2", "--forwards", "30"], [], torch_thread, (300, 900)),
    "time_to_version": Bench("bench_time_to_version.py", ["--images", "64", "--epochs", "2", "--configs", "1:on"],
                             [], time_to_version, (900, 5400)),
    "ingest": Bench("bench_ingest.py", ["--repeats", "2"], ["--mode", "zip"], ingest, (300, 1200)),
    "import": Bench("bench_import.py", ["--limit", "60", "--repeats", "1"], ["--repeats", "3"], import_, (400, 1800)),
    "answers": Bench("bench_answers.py", [], [], answers, (300, 600)),
    "export": Bench("bench_export.py", ["--runs", "30"], ["--runs", "50"], export, (400, 1200)),
    "models": Bench("bench_models.py", ["--images", "12", "--epochs", "1", "--image-size", "64", "--requests", "20",
                                        "--worker-threads", "1"],
                    ["--images", "48", "--epochs", "3", "--image-size", "96", "--worker-threads", "1"], models,
                    (900, 3600)),
    "dashboard": Bench("bench_dashboard.py", ["--sizes", "30", "--repeats", "2"], [], dashboard, (400, 1800)),
    "quickstart": Bench("bench_quickstart.py", ["--skip-defaults"], ["--steps", "2"], quickstart, (1200, 3600)),
    "reliability": Bench("bench_reliability.py", ["--duration", "40", "--promote-every", "2"], [], reliability,
                         (400, 1200)),
    "webhooks": Bench("bench_webhooks.py", ["--events", "200", "--latency-events", "10"], [], webhooks, (300, 900)),
}


# --- running one ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    command: str
    seconds: float
    load: tuple[float, float]         # 1-min load average before and after
    rows: list[Row]
    error: str = ""                   # why it failed ("" when it did not)


def python_shown() -> str:
    """The interpreter as a reader would type it: .venv/bin/python from the checkout, else python."""
    exe = Path(sys.executable)
    return shown_path(exe) if exe.is_relative_to(ROOT) else "python"


def shown_path(path: Path | str) -> str:
    """Relative to the checkout when inside it (the commands are run from its root)."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_one(name: str, bench: Bench, quick: bool, out: Path, timeout_s: float | None = None) -> Outcome:
    script = Path(bench.script) if Path(bench.script).is_absolute() else ROOT / "bench" / bench.script
    json_path, log_path = out / f"{name}.json", out / f"{name}.log"
    json_path.unlink(missing_ok=True)
    flags = [*(bench.quick if quick else bench.full), "--json", *([] if bench.json_on_stdout else [str(json_path)])]
    shown = " ".join(shlex.quote(shown_path(a) if i > 0 and flags[i - 1] == "--json" else a)
                     for i, a in enumerate(flags))
    shown = f"{python_shown()} {shown_path(script)} {shown}"
    limit = timeout_s or bench.timeout_s[0 if quick else 1]
    load_before, started, error = os.getloadavg()[0], time.monotonic(), ""
    with open(log_path, "wb") as log, open(json_path, "wb") if bench.json_on_stdout else log as stdout:
        # A session of its own, so that a timeout stops the benchmark and the servers it started.
        proc = subprocess.Popen([sys.executable, str(script), *flags], cwd=ROOT, stdout=stdout,
                                stderr=log if bench.json_on_stdout else subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(limit)
        except subprocess.TimeoutExpired:
            stop(proc)
            code, error = None, f"timed out after {limit:.0f} s"
        except KeyboardInterrupt:  # its own session does not get the terminal's Ctrl-C: pass it on
            stop(proc)
            raise
    seconds = time.monotonic() - started
    if code:
        error = f"exit status {code}: {last_line(log_path)}"
    rows: list[Row] = []
    if not json_path.is_file() or json_path.stat().st_size == 0:
        error = error or f"no JSON at {shown_path(json_path)}"
    else:
        try:
            rows = bench.extract(json.loads(json_path.read_text()))
        except Exception as err:  # noqa: BLE001 (any extractor error is this benchmark's failure, reported)
            error = error or f"could not read its JSON: {type(err).__name__}: {err}"
        if not rows:
            error = error or "its JSON gave no figures"
    return Outcome(name, shown, seconds, (load_before, os.getloadavg()[0]), rows, error)


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C first (the benchmarks' finally blocks stop their servers), then SIGKILL to the whole group."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


# --- the table ------------------------------------------------------------------------------------------
HEADER = "| benchmark | figure | Strata | bare baseline | ratio | aim | met? | command |"


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(outcomes: list[Outcome]) -> str:
    lines = [HEADER, "|---|---|---|---|---:|---|---|---|"]
    for o in outcomes:
        label = f"{o.name} ({o.seconds:.0f} s)"
        rows = list(o.rows)
        if o.error:
            rows.append(Row(f"**FAILED**: {o.error}"))
        for i, row in enumerate(rows):
            met = "" if row.met is None else ("yes" if row.met else "**no**")
            ratio = "" if row.ratio is None else f"{row.ratio:.3f}"
            lines.append("| " + " | ".join(cell(c) for c in (label if i == 0 else "", row.figure, row.strata, row.bare,
                                                             ratio, row.aim, met,
                                                             f"`{o.command}`" if i == 0 else "")) + " |")
    return "\n".join(lines) + "\n"


def report(outcomes: list[Outcome], argv: list[str], began: datetime, seconds: float) -> str:
    failed = [o.name for o in outcomes if o.error]
    missed = sum(1 for o in outcomes for r in o.rows if r.met is False)
    command = " ".join([python_shown(), "bench/run_all.py", *argv])
    head = (f"# Benchmarks\n\n`{command}` at {began:%Y-%m-%d %H:%M} UTC, commit {commit()}, {os.cpu_count()} cores, "
            f"1-min load average {outcomes[0].load[0]:.1f} at the start and {outcomes[-1].load[1]:.1f} at the end; "
            f"{seconds / 60:.1f} min. Ratio: Strata's figure / the baseline measured in the same run "
            f"(for a throughput higher is better, for a time lower). Raw JSON and logs beside this file.\n\n"
            f"{len(outcomes)} benchmarks, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; "
            f"{missed} aims missed.\n\n")
    return head + table(outcomes)


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and repeats (about 10 min on 2 quiet cores)")
    p.add_argument("--only", help=f"comma-separated, of: {', '.join(BENCHES)}")
    p.add_argument("--timeout", type=float, help="seconds per benchmark (default: each one's own)")
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench", help="where results.md, JSON and logs go")
    args = p.parse_args(argv)
    names = list(BENCHES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHES]
        if unknown or not names:
            p.error(f"--only: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(BENCHES)}")
    if args.timeout is not None and args.timeout <= 0:
        p.error("--timeout must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    began, started, outcomes = datetime.now(timezone.utc), time.monotonic(), []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        o = run_one(name, BENCHES[name], args.quick, args.out, args.timeout)
        outcomes.append(o)
        print(f"[{i}/{len(names)}] {name}: {'FAILED, ' + o.error if o.error else 'ok'} ({o.seconds:.0f} s, "
              f"load {o.load[0]:.1f} -> {o.load[1]:.1f})", flush=True)
    text = report(outcomes, argv, began, time.monotonic() - started)
    (args.out / "results.md").write_text(text)
    print("\n" + text + f"\nwritten to {args.out / 'results.md'}", flush=True)
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
