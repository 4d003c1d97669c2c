"""Prometheus metrics of one app: request latency, inference batch sizes, training durations and
the production versions, served at GET /metrics. Series about a model carry its name as the label
``model`` (one series per model: bounded by the models an operator creates, never by requests).

Each app gets its own ``CollectorRegistry`` (tests build many apps in one process; the global
registry would refuse a second set of the same names). Series that other processes produce are
read from the database at scrape time by ``RegistryCollector``: training runs in worker processes
(often on other hosts) and promotion can happen there too, so an in-process counter in the API
would miss them. Their source of truth is the database, and a restart loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.db.models import Model
from services.registry.aliases import production_versions
from services.registry.versions import training_durations

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "unmatched"  # every path no route matches: raw paths would explode the label set
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
TRAINING_BUCKETS = (60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600, float("inf"))


class ApiMetrics:
    """The app's registry and the series the API process itself observes."""

    def __init__(self, state: Callable[[], object | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency = Histogram(
            "strata_http_request_duration_seconds", "HTTP request latency by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.inference_batch_size = Histogram(
            "strata_inference_batch_size", "Images per forward pass of the dynamic inference batcher.",
            ["model"], buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.registry.register(RegistryCollector(state))

    def observe_inference_batch(self, model: str, size: int) -> None:
        """For the inference batchers: one call per forward pass with the number of images in it."""
        self.inference_batch_size.labels(model).observe(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RegistryCollector(Collector):
    """``strata_production_version`` and ``strata_training_duration_seconds`` per model, read at scrape time.

    ``state`` returns the app's ``AppState`` (None before startup: then these series are absent).
    """

    def __init__(self, state: Callable[[], object | None]) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # no DB read when the collector is registered

    def collect(self) -> Iterator[Metric]:
        state = self.state()
        if state is None:
            return
        try:
            with state.sessions() as session:
                models = dict(session.execute(select(Model.id, Model.name)).all())
                production = production_versions(session)
                durations = training_durations(session)
        except Exception:  # a scrape must not fail because the database is briefly unreachable
            log.warning("cannot read the registry for /metrics", exc_info=True)
            return
        gauge = GaugeMetricFamily("strata_production_version",
                                  "The version each model's production alias points at (0: none yet).",
                                  labels=["model"])
        for model_id, name in sorted(models.items(), key=lambda kv: kv[1]):
            gauge.add_metric([name], production.get(model_id, 0))
        yield gauge
        histogram = HistogramMetricFamily(
            "strata_training_duration_seconds",
            "Wall time of the training tasks that produced a version (start to finish), per model.",
            labels=["model"])
        for name in sorted(set(models.values())):
            values = [seconds for model, seconds in durations if model == name]
            buckets = [(_bound(b), sum(v <= b for v in values)) for b in TRAINING_BUCKETS]
            histogram.add_metric([name], buckets, sum(values))
        yield histogram


def _bound(b: float) -> str:
    return "+Inf" if b == float("inf") else repr(float(b))


class LatencyMiddleware:
    """Pure ASGI middleware timing each HTTP request, labelled by the matched route's template.

    The router writes the matched route into the (shared) scope, so it is read after the app
    returned. An exception before the response started counts as status 500.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            self.metrics.request_latency.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - start)


router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
def read_metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format (open: no key needed)."""
    return Response(metrics_of(request.app).exposition(), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> ApiMetrics:
    """Give ``app`` its registry, the latency middleware and GET /metrics."""
    metrics = ApiMetrics(lambda: getattr(app.state, "strata", None))
    app.state.metrics = metrics
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.include_router(router)
    return metrics


def metrics_of(app: FastAPI) -> ApiMetrics:
    return app.state.metrics
