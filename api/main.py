"""The FastAPI application: wiring only. Routers per resource live in ``api.routes``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routes import health, workers
from api.state import AppState
from services.config import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.strata = AppState.open(settings)
        try:
            yield
        finally:
            app.state.strata.close()

    app = FastAPI(
        title="Strata",
        summary="Continual semantic segmentation: add classes to a deployed model without forgetting the old ones.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(workers.router)
    return app


def app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory api.main:app_from_env``."""
    return create_app()
