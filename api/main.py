"""The FastAPI application: wiring only. Routers per resource live in ``api.routes``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.limits import UploadLimitMiddleware
from api.metrics import install_metrics
from api.routes import classes, health, keys, models, segment, tasks, workers
from api.state import AppState
from services.config import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.strata = AppState.open(settings, on_inference_batch=app.state.metrics.observe_inference_batch)
        await app.state.strata.inference.start()  # loads the production model in the background
        try:
            yield
        finally:
            await app.state.strata.inference.stop()
            app.state.strata.close()

    app = FastAPI(
        title="Strata",
        summary="Continual semantic segmentation: add classes to a deployed model without forgetting the old ones.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(workers.router)
    install_metrics(app)  # GET /metrics and the request-latency middleware
    app.include_router(keys.router)
    app.include_router(models.router)
    app.include_router(classes.router)
    app.include_router(tasks.router)
    app.include_router(segment.router)
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_image_bytes,
                       setting="STRATA_MAX_IMAGE_BYTES", paths=("/segment",))
    return app


def app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory api.main:app_from_env``."""
    return create_app()
