"""What the dashboard's forgetting view costs over the data it reads, as a model grows, and what
reading every score in one answer (GET /models/{name}/scores) saves over reading each version.

In one run, for each size N (versions; version v adds class v, so N versions x N+1 classes), on a
temporary embedded data dir with the API in a uvicorn subprocess and made-up scores recorded as the
worker records them (tests/dashboard/seed.py):
  data:     the JSON documents the view reads (the models list, the model, its versions, its
            classes, its scores: 5 requests), with no browser;
  details:  the same scores read as each version's detail instead (N + 4 requests, 6 at a time):
            what the view read before /scores existed;
  page:     headless Chromium opening #/m/{model}/forgetting until every heat-map cell is drawn and
            the mIoU chart has its N points (the data, plus the HTML, scripts and rendering).
Reported: the median of the repeats for each, page / data and details / data.

    python bench/bench_dashboard.py                   # N = 10, 30, 100; 5 repeats
    python bench/bench_dashboard.py --sizes 30 --repeats 3 --json r.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
from bench_ingest import free_port, start_api, stop_api, wait_healthy  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from services.auth import create_key  # noqa: E402
from services.cli.run import prepare  # noqa: E402
from services.config import load_settings  # noqa: E402
from services.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from tests.dashboard.seed import seed_many_versions  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FETCHERS = 6  # requests at a time, as a browser sends them to one host


def read_like_the_page(client: httpx.Client, model: str) -> None:
    """The view's requests, without a browser."""
    paths = ["/models", f"/models/{model}", f"/models/{model}/versions", f"/models/{model}/classes",
             f"/models/{model}/scores"]
    with ThreadPoolExecutor(len(paths)) as pool:
        list(pool.map(lambda p: client.get(p).raise_for_status(), paths))


def read_each_version(client: httpx.Client, model: str) -> None:
    """The same scores from every version's detail, as the view read them before /scores."""
    for p in ("/models", f"/models/{model}", f"/models/{model}/classes"):
        client.get(p).raise_for_status()
    versions = client.get(f"/models/{model}/versions").json()
    with ThreadPoolExecutor(FETCHERS) as pool:
        list(pool.map(lambda v: client.get(f"/models/{model}/versions/{v['version']}").raise_for_status(), versions))


def open_in_browser(page, url: str, n: int) -> None:
    page.goto(url)
    page.wait_for_function(f"() => document.querySelectorAll('#heatmap td.cell').length === {n * (n + 1)} "
                           f"&& (window.strata.charts.miou?.data[0].length || 0) === {n}", timeout=120_000)


def run(sizes: list[int], repeats: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="strata-bench-dashboard-") as tmp, sync_playwright() as p:
        settings = load_settings(data_dir=Path(tmp), port=free_port())
        prepare(settings)
        engine = make_engine(settings)
        with session_scope(make_session_factory(engine)) as s:
            _, key = create_key(s, "bench", ["read"])
        engine.dispose()
        for n in sizes:
            seed_many_versions(settings, f"m{n}", n)
        log = Path(tmp) / "api.log"
        proc = start_api(settings, log)
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            base = f"http://127.0.0.1:{settings.port}"
            client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
            wait_healthy(client, proc, log)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(f"{base}/dashboard")
            page.evaluate(f"sessionStorage.setItem('strata.apiKey', {json.dumps(key)})")
            for n in sizes:
                model, url = f"m{n}", f"{base}/dashboard#/m/m{n}/forgetting"
                read_like_the_page(client, model)  # warm-up: caches, connections, the first page load
                open_in_browser(page, url, n)
                times: dict[str, list[float]] = {"data": [], "details": [], "page": []}
                for _ in range(repeats):
                    for what, work in (("data", lambda: read_like_the_page(client, model)),
                                       ("details", lambda: read_each_version(client, model)),
                                       ("page", lambda: open_in_browser(page, url, n))):
                        page.goto("about:blank")
                        t = time.perf_counter()
                        work()
                        times[what].append(time.perf_counter() - t)
                row = {"versions": n, "classes": n + 1, **{f"{k}_s": statistics.median(v) for k, v in times.items()}}
                row["page_over_data"] = row["page_s"] / row["data_s"]
                row["details_over_data"] = row["details_s"] / row["data_s"]
                rows.append(row)
                print(f"N={n:4d} ({n + 1} classes): data {row['data_s']:.3f} s (5 requests), "
                      f"page {row['page_s']:.3f} s = {row['page_over_data']:.2f} x data; each version's detail "
                      f"instead {row['details_s']:.3f} s ({n + 4} requests) = {row['details_over_data']:.1f} x data",
                      flush=True)
        finally:
            browser.close()
            stop_api(proc)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = run(args.sizes, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
