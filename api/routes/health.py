"""Liveness and readiness.

``/readyz`` answers anyone (load balancers, orchestrators): which part fails, never where it lives
(the errors' texts name the database's user, host and port, the S3 endpoint and bucket, paths).
``/readyz/detail`` answers the same with those texts, to an admin key for every model. The API's log
has them as well, once per change: the key check itself needs the database, which may be what failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import GlobalAdminDep, StateDep
from api.errors import RETRY_AFTER_S
from api.state import AppState
from services.db.migrate import check_database

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
UNAVAILABLE = "unavailable"
_last_logged: dict[str, str | None] = {}  # per part: probes come every few seconds, a change is logged once


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


def _readiness(state: AppState, *, detail: bool) -> JSONResponse:
    model_ready, model_note, per_model = state.inference.ready(detail=detail)
    problems = {
        "database": _probe(lambda: check_database(state.engine)),
        "object_store": _probe(state.store.check),
        "broker": _probe(state.queue.check),
    }
    _log_changes(problems)
    failing = [name for name, problem in problems.items() if problem] + ([] if model_ready else ["model"])
    checks = {name: (problem if detail else UNAVAILABLE) if problem else "ok" for name, problem in problems.items()}
    body = {
        "status": "unavailable" if failing else "ready",
        "failing": failing,
        "checks": {**checks, "model": model_note},
        "models": per_model,
    }
    headers = {"Retry-After": str(RETRY_AFTER_S)} if failing else None
    return JSONResponse(body, status_code=503 if failing else 200, headers=headers)


def _log_changes(problems: dict[str, str | None]) -> None:
    for name, problem in problems.items():
        if _last_logged.get(name) != problem:
            if problem:
                log.warning("readiness: %s is unavailable: %s", name, problem)
            elif _last_logged.get(name):
                log.info("readiness: %s is back", name)
            _last_logged[name] = problem


@router.get("/readyz", responses={503: {"description": "a dependency is not ready; `failing` names it"}})
def readyz(state: StateDep) -> JSONResponse:
    """Database reachable with its schema at head, object store and broker reachable, and every
    model's production version loaded (within STRATA_INFERENCE_MAX_LOADED). No key needed: a failing
    part says `unavailable`, not why (that is in `GET /readyz/detail` and the API's log). ``models``
    gives each model's production state by name; with no version trained yet a model is ready and says
    so; while a production version exists but is not loaded yet, ``model`` is failing."""
    return _readiness(state, detail=False)


@router.get("/readyz/detail", responses={503: {"description": "a dependency is not ready; `checks` says why"}})
def readyz_detail(state: StateDep, _: GlobalAdminDep) -> JSONResponse:
    """`/readyz` with each failing part's error (which names servers, buckets and paths): for an admin
    key for every model."""
    return _readiness(state, detail=True)
