"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StateDep
from services.db.migrate import check_database

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is up (no dependency is checked)."""
    return {"status": "ok"}


def _probe(check: Callable[[], None]) -> str | None:
    try:
        check()
    except Exception as err:  # any failure of a dependency makes us not ready; say what it was
        return f"{type(err).__name__}: {err}".strip()[:500]
    return None


@router.get("/readyz", responses={503: {"description": "a dependency is not ready; `failing` names it"}})
def readyz(state: StateDep) -> JSONResponse:
    """Database reachable with its schema at head, object store and broker reachable, and every
    model's production version loaded (within STRATA_INFERENCE_MAX_LOADED). ``models`` gives each
    model's production state by name; with no version trained yet a model is ready and says so;
    while a production version exists but is not loaded yet, ``model`` is failing."""
    model_ready, model_note, per_model = state.inference.ready()
    problems = {
        "database": _probe(lambda: check_database(state.engine)),
        "object_store": _probe(state.store.check),
        "broker": _probe(state.queue.check),
        "model": None if model_ready else model_note,
    }
    failing = [name for name, problem in problems.items() if problem]
    body = {
        "status": "unavailable" if failing else "ready",
        "failing": failing,
        "checks": {**{name: problem or "ok" for name, problem in problems.items()}, "model": model_note},
        "models": per_model,
    }
    return JSONResponse(body, status_code=503 if failing else 200)
