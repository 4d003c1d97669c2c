"""The FastAPI application: wiring only. Routers per resource live in ``api.routes``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import housekeeping
from api.access_log import install_access_log_redaction
from api.errors import install_error_handlers
from api.limits import HeaderLimitMiddleware, UploadLimitMiddleware
from api.metrics import install_metrics
from api.openapi import install_openapi
from api.routes import (
    aliases,
    audit,
    classes,
    compare,
    exports,
    health,
    keys,
    models,
    samples,
    segment,
    tasks,
    versions,
    webhooks,
    workers,
)
from api.routes.dashboard import install_dashboard
from api.state import AppState
from services.config import Settings, get_settings

DESCRIPTION = """\
A deployment holds any number of **models**: named lineages, each with its own classes (indices
unique within the model, 0 = background), its own versions 1, 2, ..., its own aliases
(`production`, `latest`, and names you choose), its own promotion policy and its own queue of
training steps. Everything about a model lives under `/models/{name}`; a task's id is global.

Authenticate with `Authorization: Bearer <API key>`. Scopes: `admin`, `infer` (segmenting and
reading), `read`. A key may be limited to some models.
"""
TAGS = [
    {"name": "models", "description": "Named lineages: create, list, change the promotion policy, delete."},
    {"name": "tasks", "description": "Training steps: upload a class set for a model, follow its progress, cancel."},
    {"name": "versions", "description": "A model's trained versions: scores per class, forgetting, lineage, "
                                        "promotion decision."},
    {"name": "aliases", "description": "Movable names of a model's versions; moving `production` promotes or "
                                       "rolls back."},
    {"name": "classes", "description": "A model's classes: mask values, names and display colours."},
    {"name": "inference", "description": "Segment an image with a model's production version or any other."},
    {"name": "audit", "description": "Who (which API key) created, changed, promoted, rolled back, cancelled, "
                                     "revoked or deleted what, and when. Admin keys for every model."},
    {"name": "webhooks", "description": "Subscriptions: task, version and alias events POSTed to your URL, signed "
                                        "(HMAC-SHA256), retried with backoff; each one's delivery log. Admin keys "
                                        "for every model."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.strata = AppState.open(settings, on_inference_batch=app.state.metrics.observe_inference_batch)
        await app.state.strata.inference.start()  # loads the production model in the background
        chores = asyncio.create_task(housekeeping.run_forever(app.state.strata))  # outbox relay, failed uploads
        try:
            yield
        finally:
            chores.cancel()
            await app.state.strata.inference.stop()
            app.state.strata.close()

    app = FastAPI(
        title="Strata",
        summary="Continual semantic segmentation: add classes to a deployed model without forgetting the old ones.",
        description=DESCRIPTION,
        version="0.2.0",
        lifespan=lifespan,
        openapi_tags=TAGS,
    )
    install_error_handlers(app)
    install_access_log_redaction()  # no key sent in a URL reaches uvicorn's access log
    app.include_router(health.router)
    app.include_router(workers.router)
    install_metrics(app)  # GET /metrics and the request-latency middleware
    app.include_router(keys.router)
    app.include_router(audit.router)
    app.include_router(webhooks.router)
    app.include_router(models.router)
    app.include_router(tasks.model_router)
    app.include_router(versions.router)
    app.include_router(versions.scores_router)
    app.include_router(samples.router)
    app.include_router(exports.router)
    app.include_router(compare.router)
    app.include_router(aliases.router)
    app.include_router(classes.router)
    app.include_router(segment.router)
    app.include_router(tasks.router)
    install_dashboard(app)  # GET /dashboard and its static files
    install_openapi(app)  # the shared responses (401, 403, 413, 503) and the one error shape in /openapi.json
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes,
                       idle_timeout_s=settings.body_timeout_s)
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_image_bytes,
                       setting="STRATA_MAX_IMAGE_BYTES", paths=("/models/*/segment",))
    app.add_middleware(HeaderLimitMiddleware, max_bytes=settings.max_header_bytes)
    return app


def app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory api.main:app_from_env``."""
    return create_app()
