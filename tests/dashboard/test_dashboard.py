"""The dashboard in a real browser (headless Chromium) against a real API process and worker, with
versions that worker trained. Every number the page shows is checked against the REST API's."""

from __future__ import annotations

import re

import httpx
import pytest
from PIL import Image

from tests.dashboard.conftest import MODEL, shot, sign_in, wait_for
from tests.dashboard.seed import seed_many_versions
from tests.worker.test_import_training import cvat_zip, shapes
from tests.worker.test_training_flow import shapes_zip

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def production(stack) -> int | None:
    with stack.api() as api:
        return api.get(f"/models/{MODEL}").json()["production"]


def move_production(stack, version: int) -> None:
    with stack.api() as api:
        assert api.put(f"/models/{MODEL}/aliases/production", json={"version": version}).status_code == 200


def test_the_empty_state_says_how_to_start(stack_factory, new_page):
    empty = stack_factory(worker=False)
    page = new_page()
    sign_in(page, empty)
    page.wait_for_selector("#empty-state")
    text = page.inner_text("#empty-state")
    assert "No model yet" in text and "/tasks" in text and "archive=@data.zip" in text
    assert page.is_visible("#create-model")
    shot(page, "empty-state")


@pytest.mark.http_errors(401)
def test_a_wrong_key_gets_a_clear_message_and_the_key_stays_out_of_urls(stack, new_page):
    page = new_page()
    page.goto(f"{stack.url}/dashboard")
    page.fill("#api-key", "strata_not-a-key")
    page.click("form.key-form button[type=submit]")
    alert = page.wait_for_selector(".key-form [role=alert]")
    assert "The key was refused: invalid or revoked API key" in alert.inner_text()
    shot(page, "wrong-key")
    sign_in(page, stack)
    assert stack.admin_key not in page.url
    # It survives a reload (sessionStorage), and "Forget key" drops it.
    page.reload()
    page.wait_for_selector(".model-card")
    page.goto(f"{stack.url}/dashboard#/m/{MODEL}/forgetting")
    page.wait_for_selector("#heatmap")
    for log in ("api.log", "worker.log"):  # what the processes logged, requests included
        assert stack.admin_key not in (stack.settings.data_dir / log).read_text(errors="replace"), log
    page.click("#key-status button")
    page.wait_for_selector("#api-key")


def test_the_overview_shows_every_model_with_production_and_last_step(stack, new_page):
    page = new_page()
    sign_in(page, stack)
    card = page.wait_for_selector(f".model-card[data-model='{MODEL}']")
    with stack.api() as api:
        model = api.get(f"/models/{MODEL}").json()
    assert card.query_selector("[data-field=production]").inner_text() == f"v{model['production']}"
    assert "SUCCEEDED" in card.inner_text().upper()
    assert page.eval_on_selector_all("#model-picker option", "os => os.map(o => o.value)") == ["", MODEL]
    shot(page, "overview")


def test_the_versions_table_and_lineage_list_every_version(stack, new_page):
    page = new_page()
    sign_in(page, stack, hash_=f"#/m/{MODEL}")
    page.wait_for_selector("#versions-table")
    with stack.api() as api:
        versions = api.get(f"/models/{MODEL}/versions").json()
    rows = page.eval_on_selector_all("#versions-table tbody tr", "rs => rs.map(r => Number(r.dataset.version))")
    assert sorted(rows) == [v["version"] for v in versions]
    for v in versions:
        row = page.query_selector(f"#versions-table tr[data-version='{v['version']}']")
        for part in ("old", "new", "all"):
            expected = "–" if v["miou"][part] is None else f"{v['miou'][part] * 100:.1f}"
            assert row.query_selector(f"[data-field=miou-{part}]").inner_text() == expected
    nodes = page.eval_on_selector_all("#lineage .node", "ns => ns.map(n => Number(n.dataset.version))")
    assert sorted(nodes) == [v["version"] for v in versions]
    assert page.get_attribute("#lineage .node.prod", "data-version") == str(production(stack))
    shot(page, "versions")


def test_every_heat_map_cell_shows_the_apis_iou_and_the_chart_has_a_point_per_version(stack, new_page):
    page = new_page()
    sign_in(page, stack, hash_=f"#/m/{MODEL}/forgetting")
    page.wait_for_selector("#heatmap td.cell")
    with stack.api() as api:
        versions = [api.get(f"/models/{MODEL}/versions/{v['version']}").json()
                    for v in api.get(f"/models/{MODEL}/versions").json()]
        classes = [c["name"] for c in api.get(f"/models/{MODEL}/classes").json()]
    checked = 0
    for v in versions:
        scores = {c["name"]: c for c in v["classes"]}
        for name in classes:
            cell = page.query_selector(f"#heatmap td[data-model='{MODEL}'][data-version='{v['version']}'][data-class='{name}']")
            assert cell is not None, (v["version"], name)
            if name not in scores:
                assert "absent" in cell.get_attribute("class")
                continue
            iou = scores[name]["iou"]
            assert cell.query_selector(".v").inner_text() == ("–" if iou is None else f"{iou * 100:.1f}")
            assert ("introduced" in cell.get_attribute("class")) == (scores[name]["role"] == "new")
            drop = scores[name]["forgetting"]
            assert ("drop" in cell.get_attribute("class").split()) == (drop is not None and drop * 100 >= 1.0)
            checked += 1
    assert checked == sum(len(v["classes"]) for v in versions)
    xs = page.evaluate("window.strata.charts.miou.data[0]")
    assert xs == [v["version"] for v in versions]
    alls = page.evaluate("window.strata.charts.miou.data[3]")
    assert alls == [round(v["miou"]["all"] * 100, 1) for v in versions]
    shot(page, "heatmap")


def test_the_compare_views_deltas_equal_the_apis(stack, new_page):
    page = new_page()
    sign_in(page, stack, hash_=f"#/m/{MODEL}/compare?a=1&b=2")
    page.wait_for_selector("#compare-table tbody tr")
    with stack.api() as api:
        v1 = {c["name"]: c["iou"] for c in api.get(f"/models/{MODEL}/versions/1").json()["classes"]}
        v2 = {c["name"]: c["iou"] for c in api.get(f"/models/{MODEL}/versions/2").json()["classes"]}
        verdict = api.get(f"/models/{MODEL}/compare?a=1&b=2").json()["verdict"]
    rows = page.eval_on_selector_all("#compare-table tbody tr", """rs => rs.map(r => ({
        name: r.dataset.class, delta: r.querySelector('[data-field=delta]').dataset.delta,
        text: r.querySelector('[data-field=delta]').innerText}))""")
    assert {r["name"] for r in rows} == set(v1) | set(v2)
    for r in rows:
        if r["name"] in v1 and r["name"] in v2 and None not in (v1[r["name"]], v2[r["name"]]):
            expected = v2[r["name"]] - v1[r["name"]]
            assert float(r["delta"]) == pytest.approx(expected, abs=1e-9)
            assert r["text"] == f"{'+' if expected > 0 else ''}{expected * 100:.1f}"
        else:
            assert r["delta"] == "" and r["text"] == "–"
    deltas = [float(r["delta"]) for r in rows if r["delta"]]
    assert deltas == sorted(deltas)  # the largest drop first
    assert page.inner_text("#verdict").startswith(("✓ " if verdict["promote"] else "✗ ") + verdict["summary"])
    shot(page, "compare")


@pytest.mark.http_errors(403)
def test_promotion_is_refused_without_the_admin_key(stack, new_page):
    move_production(stack, 1)
    page = new_page()
    sign_in(page, stack, stack.read_key, hash_=f"#/m/{MODEL}/compare?a=1&b=2")
    page.click("#promote-b")
    page.wait_for_selector("#dialog #compare-table")
    page.click("#confirm-move")
    error = page.wait_for_selector("#dialog-result [role=alert]")
    assert "this needs a key with scope 'admin'" in error.inner_text()
    shot(page, "promote-refused")
    assert production(stack) == 1


def test_promote_then_roll_back_with_the_consequences_shown_first(stack, new_page):
    move_production(stack, 1)
    page = new_page()
    sign_in(page, stack, hash_=f"#/m/{MODEL}/compare?a=1&b=2")
    page.click("#promote-b")
    page.wait_for_selector("#dialog #compare-table tbody tr")
    with stack.api() as api:
        expected = {c["name"]: c["delta"] for c in api.get(f"/models/{MODEL}/compare?a=1&b=2").json()["classes"]}
    shown = page.eval_on_selector_all("#dialog #compare-table tbody tr",
                                      "rs => rs.map(r => [r.dataset.class, r.querySelector('[data-field=delta]').dataset.delta])")
    assert {name: (float(d) if d else None) for name, d in shown} == pytest.approx(expected)
    shot(page, "promote-confirm")
    assert production(stack) == 1  # nothing moved before the click
    page.click("#confirm-move")
    page.wait_for_selector(".flash-ok")
    assert "production of street is now v2 (was v1)" in page.inner_text("#notice")
    assert production(stack) == 2
    # Roll back from the versions table.
    page.goto(f"{stack.url}/dashboard#/m/{MODEL}")
    page.click("#versions-table tr[data-version='1'] [data-action=promote]")
    page.wait_for_selector("#dialog #compare-table")
    assert page.inner_text("#confirm-move") == "Roll back to v1"
    page.click("#confirm-move")
    page.wait_for_selector("#notice .flash-ok:has-text('now v1 (was v2)')")
    assert production(stack) == 1


@pytest.mark.http_errors(409)  # the first, refused submission
def test_a_zip_submitted_from_the_page_trains_live_and_can_be_cancelled(stack, new_page, tmp_path):
    page = new_page()
    sign_in(page, stack, hash_=f"#/m/{MODEL}/submit")
    archive = tmp_path / "shapes.zip"
    archive.write_bytes(shapes_zip(tmp_path, [1], 16, seed=7))
    # First a bad spec: the API's own message is shown and nothing is created.
    with stack.api() as api:
        before = len(api.get(f"/models/{MODEL}/tasks").json())
    page.fill("#submit-classes", "square")  # already a class of the model: a 409
    page.set_input_files("#submit-archive", str(archive))
    page.click("#submit-form button[type=submit]")
    error = page.wait_for_selector("#submit-result [role=alert]")
    assert "square" in error.inner_text() and "already" in error.inner_text()
    with stack.api() as api:
        assert len(api.get(f"/models/{MODEL}/tasks").json()) == before
    page.fill("#submit-classes", "marker")
    page.fill("#submit-epochs", "300")
    page.click("#submit-form button[type=submit]")
    link = page.wait_for_selector("#new-task-link")
    task_id = link.get_attribute("href").rsplit("/", 1)[1]
    with stack.api() as api:
        task = api.get(f"/tasks/{task_id}").json()
    assert task["classes"] == {"marker": 4} and task["status"] in ("queued", "running")
    shot(page, "submitted")
    link.click()
    page.wait_for_selector("#task-facts")
    # Live progress: the numbers and the loss curve change without a reload.
    page.wait_for_function("() => (window.strata.charts.loss?.data[0].length || 0) >= 2", timeout=120_000)
    first = (page.inner_text("[data-field=text]"), page.evaluate("window.strata.charts.loss.data[0].length"))
    page.wait_for_function(f"() => window.strata.charts.loss.data[0].length > {first[1]}", timeout=60_000)
    assert page.inner_text("[data-field=text]") != first[0]
    assert re.search(r"epoch \d+/300 · step \d+/\d+", page.inner_text("[data-field=text]"))
    assert page.inner_text("[data-field=rate]").endswith("images/s")
    assert re.match(r"\d+ (s|min|h)", page.inner_text("[data-field=eta]"))
    shot(page, "task-live")
    page.goto(f"{stack.url}/dashboard#/training")
    page.wait_for_selector(f"#running [data-task='{task_id}'] progress")
    shot(page, "queue-live")
    page.click(f"#running [data-task='{task_id}'] [data-action=cancel]")
    page.wait_for_selector("#confirm-cancel")
    page.click("#confirm-cancel")
    with stack.api() as api:
        assert wait_for(api, task_id, timeout_s=60)["status"] == "cancelled"
    page.wait_for_selector(f"[data-section=cancelled] tr[data-task='{task_id}']", timeout=10_000)
    shot(page, "queue-cancelled")


def test_an_annotation_export_submitted_from_the_page_shows_its_import_report(stack, new_page, tmp_path):
    with stack.api() as api:
        assert api.post("/models", json={"name": "from-cvat"}).status_code == 201
    archive = tmp_path / "cvat.zip"
    archive.write_bytes(cvat_zip(shapes(tmp_path, "cvat", 6, [1, 2], seed=3)))
    page = new_page()
    sign_in(page, stack, hash_="#/m/from-cvat/submit")
    page.fill("#submit-classes", "disc")  # square is labelled too, but not named: ignored, and reported
    page.fill("#submit-epochs", "1")
    page.select_option("#submit-format", "cvat_mask")
    page.select_option("#submit-other-labels", "ignore")
    page.set_input_files("#submit-archive", str(archive))
    page.click("#submit-form button[type=submit]")
    page.click("#new-task-link")
    report = page.wait_for_selector("#import-report")
    assert "6 images read as cvat_mask" in report.inner_text()
    assert page.inner_text("#import-report tr[data-class=disc]").split() == ["disc", "6"]
    assert "square (6)" in page.inner_text("#import-report [data-issue=unknown_labels]")
    shot(page, "import-report")
    with stack.api() as api:
        task_id = page.url.rsplit("/", 1)[1]
        assert api.get(f"/tasks/{task_id}").json()["import_report"]["issues"][0]["labels"] == {"square": 6}
        api.post(f"/tasks/{task_id}/cancel")


def test_see_it_segment_samples_and_an_uploaded_image(stack, new_page, tmp_path):
    page = new_page()
    sign_in(page, stack, hash_=f"#/m/{MODEL}/segment?v=2")
    page.wait_for_selector("#samples[data-state=done]", timeout=60_000)
    figures = page.query_selector_all("#samples figure")
    assert figures and all(len(f.query_selector_all("canvas")) == 3 for f in figures)
    with stack.api() as api:
        colours = {c["name"]: c["hex"] for c in api.get(f"/models/{MODEL}/classes").json()}
    legend = page.eval_on_selector_all("#samples .legend li", "ls => ls.map(l => [l.dataset.class, getComputedStyle(l.querySelector('.swatch')).backgroundColor])")
    assert legend
    for name, css in legend:
        r, g, b = (int(x) for x in re.findall(r"\d+", css)[:3])
        assert f"#{r:02x}{g:02x}{b:02x}" == colours[name]
    image = tmp_path / "mine.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(image)
    page.set_input_files("#upload-image", str(image))
    page.wait_for_selector("#upload-legend li")
    assert "48×40 px" in page.inner_text("#upload-result")
    shot(page, "segment")


# Each view and what shows it has drawn (a hash change keeps the previous view's heading for a while).
VIEWS = [("overview", "", "#models"), ("versions", f"/m/{MODEL}", "#versions-table"),
         ("forgetting", f"/m/{MODEL}/forgetting", "#heatmap"), ("compare", f"/m/{MODEL}/compare", "#compare-table"),
         ("training", f"/m/{MODEL}/training", "[data-section=succeeded]"),
         ("segment", f"/m/{MODEL}/segment", "#samples[data-state=done]"), ("submit", f"/m/{MODEL}/submit", "#submit-form")]


@pytest.mark.parametrize(("width", "height", "label"), [(390, 844, "phone"), (1920, 1080, "wide")])
def test_the_pages_fit_a_phone_and_a_wide_screen(stack, new_page, width, height, label):
    page = new_page(width, height)
    sign_in(page, stack)
    for name, route, drawn in VIEWS:
        page.goto(f"{stack.url}/dashboard#{route or '/'}")
        page.wait_for_selector(drawn)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} is {overflow}px wider than a {width}px screen"
        shot(page, f"{label}-{name}")
    with stack.api() as api:
        task = api.get(f"/models/{MODEL}/tasks").json()[-1]
    page.goto(f"{stack.url}/dashboard#/tasks/{task['id']}")
    page.wait_for_selector("#task-facts [data-field=version] a")
    # Where the task's time went, phase by phase, as the API recorded it.
    phases = page.inner_text("#task-facts [data-field=timings]")
    assert all(p in phases for p in ("ingest", "queued", "data", "training", "scoring", "upload")), phases
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    shot(page, f"{label}-task")


@pytest.mark.http_errors(403)
def test_a_key_that_may_not_segment_sees_the_images_and_one_clear_notice(stack, new_page):
    page = new_page()
    sign_in(page, stack, stack.read_key, hash_=f"#/m/{MODEL}/segment")
    page.wait_for_selector("#samples[data-state=done]")
    assert "No predictions: this needs a key with scope 'infer'" in page.inner_text("#no-predictions")
    figures = page.query_selector_all("#samples figure")
    assert figures and all(len(f.query_selector_all("canvas")) == 2 for f in figures)  # image and ground truth
    assert page.is_disabled("#upload-image")
    shot(page, "segment-without-infer")


def test_the_page_loads_nothing_from_elsewhere(stack):
    r = httpx.get(f"{stack.url}/dashboard")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "http://" not in r.text.replace(stack.url, "") and "https://" not in r.text
    assert httpx.get(f"{stack.url}/dashboard/static/vendor/uPlot.iife.min.js").status_code == 200


def test_dozens_of_versions_and_classes_scroll_and_stay_readable(stack_factory, new_page):
    many = stack_factory(worker=False)
    seed_many_versions(many.settings, "many", 30)
    page = new_page()
    sign_in(page, many, hash_="#/m/many/forgetting")
    page.wait_for_selector("#heatmap td.cell")
    assert page.eval_on_selector_all("#heatmap tbody tr", "rs => rs.length") == 30
    assert page.eval_on_selector_all("#heatmap td.cell", "cs => cs.length") == 30 * 31
    # The heat map scrolls inside its card, its headers stay: the page itself does not grow sideways.
    box = page.eval_on_selector(".heat-card .scroll", "e => [e.scrollWidth > e.clientWidth || e.scrollHeight > e.clientHeight]")
    assert box == [True]
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    assert page.evaluate("window.strata.charts.miou.data[0].length") == 30
    shot(page, "many-forgetting")
    page.goto(f"{many.url}/dashboard#/m/many")
    page.wait_for_selector("#versions-table")
    assert page.eval_on_selector_all("#versions-table tbody tr", "rs => rs.length") == 30
    assert page.eval_on_selector_all("#lineage .node", "ns => ns.length") == 30
    shot(page, "many-versions")


def test_strata_demo_ends_with_two_versions_the_dashboard_shows(stack, new_page):
    """The quick start: `strata demo` against a running service, then the dashboard shows its model."""
    import json
    import os
    import subprocess
    import sys

    from tests.dashboard.conftest import ROOT

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRATA_")},
           "STRATA_URL": stack.url, "STRATA_API_KEY": stack.admin_key}
    demo = subprocess.run([sys.executable, "-m", "services.cli.main", "demo", "--images", "12", "--size", "48",
                           "--epochs", "2", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    model = json.loads(demo.stdout)["model"]
    page = new_page()
    sign_in(page, stack, hash_=f"#/m/{model}")
    page.wait_for_selector("#versions-table tr[data-version='2']")
    rows = page.eval_on_selector_all("#versions-table tbody tr", "rs => rs.map(r => Number(r.dataset.version))")
    assert sorted(rows) == [1, 2]
    nodes = page.eval_on_selector_all("#lineage .node", "ns => ns.map(n => Number(n.dataset.version))")
    assert sorted(nodes) == [1, 2]
    shot(page, "demo-versions")
    page.evaluate("location.hash = '#/'")
    page.wait_for_selector(f".model-card[data-model='{model}']")
