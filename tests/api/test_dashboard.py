"""GET /dashboard and its static files, without a browser (tests/dashboard drives one): the page,
its headers, that every file it loads exists, and that the vendored library is the locked one."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

from api.routes.dashboard import DASHBOARD_DIR
from services.learning.names import DEFAULT_METHOD, SERVICE_METHODS

STATIC = DASHBOARD_DIR / "static"


def test_the_page_needs_no_key_and_carries_its_config(client):
    r = client.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    config = json.loads(unescape(re.search(r'data-config="([^"]*)"', r.text).group(1)))
    assert config["methods"] == list(SERVICE_METHODS) and config["defaultMethod"] == DEFAULT_METHOD
    assert client.get("/dashboard/", follow_redirects=False).headers["location"] == "/dashboard"


def test_nothing_is_loaded_from_elsewhere(client):
    r = client.get("/dashboard")
    csp = r.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert not re.search(r"(src|href)=\"(https?:)?//", r.text)
    for path in STATIC.rglob("*.js"):
        if "vendor" not in path.parts:
            assert not re.search(r"https?://(?!\$\{location)", path.read_text()), path


def test_every_file_the_page_and_its_modules_load_is_served(client):
    html = client.get("/dashboard").text
    urls = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', html)
    assert len(urls) == 4
    modules = [p for p in STATIC.rglob("*.js") if "vendor" not in p.parts]
    for module in modules:
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', module.read_text()):
            resolved = (module.parent / target).resolve()
            assert resolved.exists(), f"{module.relative_to(STATIC)} imports {target}, which does not exist"
            urls.append("/dashboard/static/" + str(resolved.relative_to(STATIC)))
    for url in set(urls):
        r = client.get(url)
        assert r.status_code == 200, url
    # Sent as is (httpx would resolve a literal '..' before sending): nothing outside static/ is served.
    assert client.get("/dashboard/static/%2e%2e/routes/dashboard.py").status_code == 404
    assert client.get("/dashboard/static/..%2froutes/dashboard.py").status_code == 404
    assert client.get("/dashboard/static/app.js").headers["cache-control"] == "no-cache"


def test_the_vendored_chart_library_is_the_locked_version():
    lock = json.loads((DASHBOARD_DIR / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/uplot"]["version"]
    assert json.loads((DASHBOARD_DIR / "package.json").read_text())["dependencies"]["uplot"] == version
    banner = (STATIC / "vendor" / "uPlot.iife.min.js").read_text()[:200]
    assert f"(v{version})" in banner
    assert (STATIC / "vendor" / "uPlot.LICENSE").exists()


def test_the_static_files_are_package_data():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["*"]
    for path in DASHBOARD_DIR.rglob("*"):
        if path.is_file() and "node_modules" not in path.parts and path.name not in ("package.json", "package-lock.json"):
            assert any(path.match(p) for p in patterns), f"{path.name} would be left out of a wheel"
