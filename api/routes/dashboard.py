"""The ops dashboard at /dashboard: one HTML page and its static files, served by the API process.

The page is a shell; its scripts read the same REST API any client uses, with the key the operator
pastes (kept in the browser's sessionStorage and sent as a Bearer header: never in a URL, so never
in an access log). Every script and style is a committed file under api/dashboard/static; the
Content-Security-Policy forbids loading anything from elsewhere.
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from services.learning.names import DEFAULT_METHOD, SERVICE_METHODS

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"
STATIC_URL = "/dashboard/static"
# blob: for images fetched with the key; inline styles for the colours scripts compute.
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
           "Cache-Control": "no-store"}

router = APIRouter(include_in_schema=False)


@functools.cache
def _page() -> str:
    """index.html with what the scripts need to know of the service (methods for the submit form);
    built once, as neither changes while the process runs."""
    config = {"methods": list(SERVICE_METHODS), "defaultMethod": DEFAULT_METHOD, "static": STATIC_URL}
    template = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    return template.replace("{{config}}", html.escape(json.dumps(config), quote=True))


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    return HTMLResponse(_page(), headers=HEADERS)


@router.get("/dashboard/")
def dashboard_slash() -> RedirectResponse:
    return RedirectResponse("/dashboard")


class RevalidatedFiles(StaticFiles):
    """Static files a browser revalidates (ETag) before each use, so that after an upgrade it never
    runs new modules beside old ones."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_URL, RevalidatedFiles(directory=DASHBOARD_DIR / "static"), name="dashboard-static")
