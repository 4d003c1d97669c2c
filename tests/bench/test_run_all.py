"""bench/run_all.py (`make bench`): each benchmark's flags, its extractor on JSON the benchmark wrote,
the aims, and a failing, hanging or unreadable benchmark turned into a FAILED row and exit status 1.
The benchmarks themselves are not run here (the canned JSON in data/ comes from a `--quick` run)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
run_all = importlib.util.module_from_spec(spec)
sys.modules["run_all"] = run_all  # dataclasses look their module up by name
spec.loader.exec_module(run_all)

CANNED = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", list(run_all.BENCHES))
def test_every_flag_is_one_its_script_takes(name: str) -> None:
    bench = run_all.BENCHES[name]
    source = (ROOT / "bench" / bench.script).read_text()
    taken = set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", source))
    flags = {a for a in bench.quick + bench.full + ["--json"] if a.startswith("--")}
    assert flags <= taken, f"{bench.script} does not take {sorted(flags - taken)}"


@pytest.mark.parametrize("name", list(run_all.BENCHES))
def test_each_extractor_reads_what_its_benchmark_wrote(name: str) -> None:
    rows = run_all.BENCHES[name].extract(json.loads((CANNED / f"{name}.json").read_text()))
    assert rows and all(r.figure and r.strata for r in rows)
    for r in rows:  # a row with an aim says whether it is met; one without says nothing
        assert (r.aim == "") == (r.met is None), r


def test_the_aims_bound_the_ratios() -> None:
    r = json.loads((CANNED / "segment-128.json").read_text())
    r["latency"]["ratio_p50"], r["throughput"]["ratio"] = 1.33, 0.81
    p50, _, throughput = run_all.segment(r)
    assert (p50.aim, p50.met, throughput.aim, throughput.met) == ("<= 1.2", False, ">= 0.8", True)
    r["latency"]["ratio_p50"], r["throughput"]["ratio"] = 1.2, 0.59
    p50, _, throughput = run_all.segment(r)
    assert (p50.met, throughput.met) == (True, False)
    ttv = json.loads((CANNED / "time_to_version.json").read_text())
    ttv["rounds"] = [{**ttv["rounds"][0], "ratio": 1.16}, {**ttv["rounds"][0], "ratio": 1.1}]
    assert [(r.aim, r.met) for r in run_all.time_to_version(ttv)] == [("<= 1.15", False), ("<= 1.15", True)]


def test_the_table_has_a_row_per_figure_and_escapes_pipes() -> None:
    ok = run_all.Outcome("a", ".venv/bin/python bench/bench_a.py --json x", 12.3, (1.0, 2.0), [
        run_all.measured("latency | p50", "10 ms", "8 ms", 1.25, at_most=1.2),
        run_all.measured("size", "3 KB")])
    bad = run_all.Outcome("b", "python bench/bench_b.py", 1.0, (2.0, 2.0), [], "exit status 2: boom")
    lines = run_all.table([ok, bad]).splitlines()
    assert lines[0] == run_all.HEADER and len(lines) == 2 + 3
    assert lines[2].split(" | ")[:8] == ["| a (12 s)", "latency \\| p50", "10 ms", "8 ms", "1.250", "<= 1.2", "**no**",
                                         "`.venv/bin/python bench/bench_a.py --json x` |"]
    assert lines[3].startswith("|  | size | 3 KB |  |  |  |  |  |")
    assert lines[4].startswith("| b (1 s) | **FAILED**: exit status 2: boom |")


def script(tmp_path: Path, name: str, body: str) -> str:
    """A benchmark stand-in taking `--json PATH`, as the real ones do."""
    path = tmp_path / f"{name}.py"
    path.write_text("import argparse, json, subprocess, sys, time\n"
                    "p = argparse.ArgumentParser(); p.add_argument('--json'); p.add_argument('--n', type=int)\n"
                    "args = p.parse_args()\n" + textwrap.dedent(body))
    return str(path)


def test_failing_hanging_and_unreadable_benchmarks_get_failed_rows(tmp_path: Path, monkeypatch, capsys) -> None:
    extract = lambda r: [run_all.measured("figure", f"{r['n']} s", "1 s", r["n"] / 1, at_most=3)]  # noqa: E731
    pids = tmp_path / "child.pid"
    benches = {
        "good": run_all.Bench(script(tmp_path, "good", "json.dump({'n': args.n}, open(args.json, 'w'))"),
                              ["--n", "2"], ["--n", "5"], extract),
        "crashes": run_all.Bench(script(tmp_path, "crashes", "print('loading'); sys.exit('boom: no data')"),
                                 [], [], extract),
        # It starts a server-like child in its session and never ends: the timeout must stop both.
        "hangs": run_all.Bench(script(tmp_path, "hangs", f"""
            child = subprocess.Popen(['sleep', '300'])
            open({str(pids)!r}, 'w').write(str(child.pid))
            time.sleep(300)"""), [], [], extract, (2, 2)),
        "garbled": run_all.Bench(script(tmp_path, "garbled", "open(args.json, 'w').write('{\"m\": 1}')"), [], [],
                                 extract),
    }
    for name, bench in benches.items():
        monkeypatch.setitem(run_all.BENCHES, name, bench)
    out = tmp_path / "out"
    began = time.monotonic()
    code = run_all.main(["--quick", "--only", ",".join(benches), "--out", str(out)])
    assert code == 1 and time.monotonic() - began < 60
    text = (out / "results.md").read_text()
    assert text in capsys.readouterr().out
    assert "| figure | 2 s | 1 s | 2.000 | <= 3 | yes |" in text
    assert "--n 2 --json " in text and json.loads((out / "good.json").read_text()) == {"n": 2}
    assert "**FAILED**: exit status 1: boom: no data" in text
    assert "**FAILED**: timed out after 2 s" in text
    assert "**FAILED**: could not read its JSON: KeyError: 'n'" in text
    assert "4 benchmarks, 3 failed: crashes, hangs, garbled" in text
    assert "loading" in (out / "crashes.log").read_text()
    status = Path(f"/proc/{pids.read_text()}/status")  # the hanging benchmark's child went with it
    deadline = time.monotonic() + 5
    while status.exists() and "State:\tZ" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_only_names_known_benchmarks(capsys) -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--only", "train,nope"])
    assert "--only: unknown nope" in capsys.readouterr().err
