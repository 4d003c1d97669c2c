"""Fixtures of the browser tests: a real API process and a real worker on embedded settings, versions
trained by that worker from small synthetic data, and headless Chromium driven by Playwright.

Chromium is Debian's (``/usr/bin/chromium``; ``.ci/run`` installs it). Without it these tests skip,
and with CI=true they fail. Screenshots of every view go to ``var/test-artifacts/dashboard`` (or
``$STRATA_TEST_ARTIFACTS``), to be looked at after a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, free_port, server_missing
from tests.worker.test_training_flow import SMALL, shapes_zip

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("STRATA_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts")) / "dashboard"
MODEL = "street"
# The versions of MODEL: v1 learns "square" (production); automatic promotion is then turned off, so
# v2 (adds "disc") and v3 (adds "triangle") both train from v1 and wait as candidates: a lineage tree.
# Every image draws all three shapes and labels only its step's: old classes appear as background, as
# MiB assumes. (With disjoint images, BatchNorm statistics re-estimated on a step that never shows an
# old class wipe it out: IoU 63 -> 0; docs/method-engine.md.)
STEPS = [(["square"], [1], 0), (["disc"], [2], 1), (["triangle"], [3], 2)]
SHOWN = [1, 2, 3]
EPOCHS = 20
IMAGES = 32


@dataclass
class Stack:
    url: str
    admin_key: str
    read_key: str
    settings: object  # services.config.Settings of the processes

    def api(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.admin_key}"}, timeout=60)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def stack_factory(tmp_path_factory) -> Iterator:
    """Starts API (and optionally worker) processes on fresh embedded settings; stops them at the end."""
    from services.auth import create_key
    from services.cli.processes import api_command, worker_command
    from services.cli.run import prepare
    from services.config import load_settings, settings_env
    from services.db.session import make_engine, make_session_factory, session_scope

    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(worker: bool) -> Stack:
        data_dir = tmp_path_factory.mktemp("dashboard") / "var"
        data_dir.mkdir()
        settings = load_settings(data_dir=data_dir, port=free_port(), worker_threads=1)
        prepare(settings)
        engine = make_engine(settings)
        with session_scope(make_session_factory(engine)) as session:
            _, admin = create_key(session, "browser-admin", ["admin", "infer"])  # as the generated key
            _, read = create_key(session, "browser-reader", ["read"])
        engine.dispose()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}, **settings_env(settings)}
        logs.append(data_dir / "api.log")
        procs.append(_start(api_command(settings), env, logs[-1]))
        if worker:
            logs.append(data_dir / "worker.log")
            procs.append(_start(worker_command(settings), env, logs[-1]))
        stack = Stack(f"http://127.0.0.1:{settings.port}", admin, read, settings)
        _wait_ready(stack, procs[-1])
        return stack

    yield start
    for proc in procs:
        _stop(proc)
    for log in logs:  # shown by pytest only when a test failed
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def _wait_ready(stack: Stack, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"a process of the stack exited with {proc.returncode}")
        try:
            if httpx.get(f"{stack.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {stack.url} did not answer within {timeout_s}s")


@pytest.fixture(scope="module")
def stack(stack_factory, tmp_path_factory) -> Stack:
    """An API and a worker with model MODEL trained as STEPS says."""
    s = stack_factory(worker=True)
    tmp = tmp_path_factory.mktemp("zips")
    with s.api() as api:
        assert api.post("/models", json={"name": MODEL, "description": "synthetic shapes, three steps"}).status_code == 201
        for i, (names, classes, seed) in enumerate(STEPS):
            spec = {**SMALL, "classes": names, "epochs": EPOCHS}
            r = api.post(f"/models/{MODEL}/tasks", data={"spec": json.dumps(spec)},
                         files={"archive": ("data.zip", shapes_zip(tmp, classes, IMAGES, seed, SHOWN),
                                            "application/zip")})
            assert r.status_code == 202, r.text
            task = wait_for(api, r.json()["id"])
            assert task["status"] == "succeeded", task
            if i == 0:
                assert api.patch(f"/models/{MODEL}", json={"auto_promote": False}).status_code == 200
    return s


def wait_for(api: httpx.Client, task_id: str, until=("succeeded", "failed", "cancelled"), timeout_s=300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = api.get(f"/tasks/{task_id}").json()
        if task["status"] in until:
            return task
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} is still {task['status']} after {timeout_s}s")


# --- the browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    """Chromium for one module: Playwright's sync API holds a running event loop on this thread
    while it is open, and tests after it (asyncio.run) need that loop gone."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing and CI=true: apt-get install -y chromium (see .ci/run)", pytrace=False)
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        server_missing("Playwright for Python (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


class Console:
    """What reached the page's console: errors and uncaught exceptions."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def on_error(self, error) -> None:
        self.errors.append(f"uncaught: {error}")

    def unexpected(self, *allowed_statuses: int) -> list[str]:
        """Errors other than the browser's report of an HTTP answer with one of ``allowed_statuses``."""
        allowed = [f"status of {s} " for s in allowed_statuses]
        return [e for e in self.errors if not any(a in e for a in allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def new_page(browser, console, request):
    """new_page(width, height) -> a page in a fresh context (no stored key); console errors are collected
    in ``console``, and a test without expected HTTP errors fails on any."""
    contexts = []

    def make(width: int = 1400, height: int = 900):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("console", console.on_console)
        page.on("pageerror", console.on_error)
        return page

    yield make
    for context in contexts:
        context.close()
    expected = request.node.get_closest_marker("http_errors")
    unexpected = console.unexpected(*(expected.args if expected else ()))
    assert not unexpected, f"JavaScript errors reached the console: {unexpected}"


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def sign_in(page, stack: Stack, key: str | None = None, hash_: str = "") -> None:
    page.goto(f"{stack.url}/dashboard{hash_}")
    page.fill("#api-key", key or stack.admin_key)
    page.click("form.key-form button[type=submit]")
    page.wait_for_selector("#key-status button")
