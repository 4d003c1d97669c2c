"""GET /metrics through the real app (both flavours): latency by route template, the production
version and training durations read from the database, inference batch sizes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from api.metrics import metrics_of
from services.db.models import Task
from services.db.session import session_scope
from tests.api.test_auth import bearer, make_key
from tests.services.test_registry import seed_lineage


def scrape(client) -> dict[str, list]:
    """{sample name: [(labels, value), ...]} of one /metrics scrape."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples, name: str, **labels) -> float | None:
    for got, v in samples.get(name, []):
        if all(got.get(k) == str(want) for k, want in labels.items()):
            return v
    return None


def test_request_latency_is_labelled_by_route_template(client):
    reader = bearer(make_key(client, ["infer"]))
    for version in (41, 42, 43):
        assert client.get(f"/models/{version}", headers=reader).status_code == 404
    client.get("/models", headers=reader)
    client.get("/models")  # 401
    client.get("/no/such/path")
    samples = scrape(client)
    count = "strata_http_request_duration_seconds_count"
    assert value(samples, count, route="/models/{version}", method="GET", status=404) == 3
    assert value(samples, count, route="/models", method="GET", status=200) == 1
    assert value(samples, count, route="/models", method="GET", status=401) == 1
    assert value(samples, count, route="unmatched", method="GET", status=404) == 1
    routes = {labels["route"] for labels, _ in samples[count]}
    assert not any("41" in r or "/no/such" in r for r in routes)
    assert value(samples, "strata_http_request_duration_seconds_bucket", route="/models", status=200, le="+Inf") == 1


def test_production_version_and_training_durations_come_from_the_database(client, prepared):
    samples = scrape(client)
    assert value(samples, "strata_production_version") == 0
    assert value(samples, "strata_training_duration_seconds_count") == 0

    sessions = client.app.state.strata.sessions
    seed_lineage(sessions, prepared)  # v2 is production
    with session_scope(sessions) as s:
        for task_id, minutes in (("t1", 3), ("t2", 20), ("t3", 90)):
            task = s.get(Task, task_id)
            task.finished_at = task.created_at + timedelta(minutes=minutes + 1)
            task.started_at = task.created_at + timedelta(minutes=1)
    samples = scrape(client)
    assert value(samples, "strata_production_version") == 2
    assert value(samples, "strata_training_duration_seconds_count") == 3
    assert value(samples, "strata_training_duration_seconds_sum") == pytest.approx(113 * 60)
    assert value(samples, "strata_training_duration_seconds_bucket", le="300.0") == 1
    assert value(samples, "strata_training_duration_seconds_bucket", le="3600.0") == 2
    assert value(samples, "strata_training_duration_seconds_bucket", le="+Inf") == 3

    admin = bearer(make_key(client, ["admin"]))
    assert client.post("/models/1/promote", headers=admin).status_code == 200
    assert value(scrape(client), "strata_production_version") == 1


def test_inference_batch_sizes(client):
    metrics = metrics_of(client.app)
    for size in (1, 3, 8):
        metrics.observe_inference_batch(size)
    samples = scrape(client)
    assert value(samples, "strata_inference_batch_size_count") == 3
    assert value(samples, "strata_inference_batch_size_sum") == 12
    assert value(samples, "strata_inference_batch_size_bucket", le="2.0") == 1


def test_each_app_has_its_own_registry(prepared):
    with TestClient(create_app(prepared)) as a, TestClient(create_app(prepared)) as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        count = "strata_http_request_duration_seconds_count"
        assert value(scrape(a), count, route="/healthz") == 2
        assert value(scrape(b), count, route="/healthz") == 1
