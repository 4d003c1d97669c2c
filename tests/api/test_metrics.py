"""GET /metrics through the real app (both flavours): latency by route template, each model's
production version and training durations read from the database, inference batch sizes per model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from api.metrics import metrics_of
from services.db.models import Task
from services.db.session import session_scope
from services.registry.models import get_model
from tests.api.test_segment import make_key
from tests.conftest import bearer
from tests.services.inference.helpers import publish, task_id_of

CLASSES = {0: "background", 1: "cat", 2: "dog"}


def model_id(sessions, name: str) -> int:
    with sessions() as s:
        return get_model(s, name).id


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
    admin = bearer(make_key(client, ["admin"]))
    assert client.post("/models", json={"name": "roads"}, headers=admin).status_code == 201
    reader = bearer(make_key(client, ["infer"]))
    for version in (41, 42, 43):
        assert client.get(f"/models/roads/versions/{version}", headers=reader).status_code == 404
    assert client.get("/models/other/versions/1", headers=reader).status_code == 404  # no such model
    client.get("/models", headers=reader)
    client.get("/models")  # 401
    client.get("/no/such/path")
    samples = scrape(client)
    count = "strata_http_request_duration_seconds_count"
    assert value(samples, count, route="/models/{name}/versions/{version}", method="GET", status=404) == 4
    assert value(samples, count, route="/models", method="GET", status=200) == 1
    assert value(samples, count, route="/models", method="GET", status=401) == 1
    assert value(samples, count, route="/models", method="POST", status=201) == 1
    assert value(samples, count, route="unmatched", method="GET", status=404) == 1
    routes = {labels["route"] for labels, _ in samples[count]}
    assert not any("41" in r or "/no/such" in r or "roads" in r or "other" in r for r in routes)
    assert value(samples, "strata_http_request_duration_seconds_bucket", route="/models", status=200, le="+Inf") == 1


def series(samples, name: str) -> dict[str, float]:
    """{model: value} of a per-model series: one sample per model, labelled by the model only."""
    found: dict[str, float] = {}
    for labels, v in samples.get(name, []):
        assert set(labels) == {"model"} and labels["model"] not in found, labels
        found[labels["model"]] = v
    return found


def test_production_versions_one_series_per_model(client, prepared):
    samples = scrape(client)
    assert samples.get("strata_production_version", []) == []  # no model: no series
    admin = bearer(make_key(client, ["admin"]))
    for name in ("a", "b", "c"):
        assert client.post("/models", json={"name": name}, headers=admin).status_code == 201
    assert series(scrape(client), "strata_production_version") == {"a": 0, "b": 0, "c": 0}

    state = client.app.state.strata
    ids = {name: model_id(state.sessions, name) for name in ("a", "b")}
    for version in (1, 2, 3):  # a: production 3
        publish(state.sessions, state.store, prepared, model_id=ids["a"], version=version, class_map=CLASSES,
                winner=1, parent=version - 1 or None)
    publish(state.sessions, state.store, prepared, model_id=ids["b"], version=1, class_map=CLASSES, winner=2)
    assert series(scrape(client), "strata_production_version") == {"a": 3, "b": 1, "c": 0}

    # Moving one model's production moves its series only.
    assert client.put("/models/a/aliases/production", json={"version": 2}, headers=admin).status_code == 200
    assert client.put("/models/b/aliases/candidate", json={"version": 1}, headers=admin).status_code == 200
    assert series(scrape(client), "strata_production_version") == {"a": 2, "b": 1, "c": 0}
    # A deleted model's series goes with it.
    assert client.delete("/models/c", headers=admin).status_code == 204
    assert series(scrape(client), "strata_production_version") == {"a": 2, "b": 1}


def test_training_durations_per_model(client, prepared):
    samples = scrape(client)
    assert samples.get("strata_training_duration_seconds_count", []) == []
    admin = bearer(make_key(client, ["admin"]))
    for name in ("a", "b"):
        assert client.post("/models", json={"name": name}, headers=admin).status_code == 201
    samples = scrape(client)
    assert series(samples, "strata_training_duration_seconds_count") == {"a": 0, "b": 0}

    state = client.app.state.strata
    ids = {name: model_id(state.sessions, name) for name in ("a", "b")}
    durations = {("a", 1): 3, ("a", 2): 20, ("a", 3): 90, ("b", 1): 45}  # minutes
    for (name, version), minutes in durations.items():
        publish(state.sessions, state.store, prepared, model_id=ids[name], version=version, class_map=CLASSES,
                winner=1, parent=version - 1 or None)
        with session_scope(state.sessions) as s:
            task = s.get(Task, task_id_of(ids[name], version))
            task.started_at = task.created_at + timedelta(minutes=1)
            task.finished_at = task.created_at + timedelta(minutes=minutes + 1)
    with session_scope(state.sessions) as s:  # a task without a version does not count
        s.add(Task(id="no-version", model_id=ids["b"], spec={}, status="failed",
                   started_at=datetime(2026, 1, 1, tzinfo=UTC), finished_at=datetime(2026, 1, 2, tzinfo=UTC)))
    samples = scrape(client)
    assert series(samples, "strata_training_duration_seconds_count") == {"a": 3, "b": 1}
    assert series(samples, "strata_training_duration_seconds_sum") == {"a": pytest.approx(113 * 60),
                                                                       "b": pytest.approx(45 * 60)}
    bucket = "strata_training_duration_seconds_bucket"
    assert value(samples, bucket, model="a", le="300.0") == 1
    assert value(samples, bucket, model="a", le="3600.0") == 2
    assert value(samples, bucket, model="a", le="+Inf") == 3
    assert value(samples, bucket, model="b", le="1800.0") == 0
    assert value(samples, bucket, model="b", le="3600.0") == 1


def test_inference_batch_sizes(client):
    metrics = metrics_of(client.app)
    for model, size in (("a", 1), ("a", 3), ("b", 8)):
        metrics.observe_inference_batch(model, size)
    samples = scrape(client)
    assert value(samples, "strata_inference_batch_size_count", model="a") == 2
    assert value(samples, "strata_inference_batch_size_sum", model="a") == 4
    assert value(samples, "strata_inference_batch_size_bucket", model="a", le="2.0") == 1
    assert value(samples, "strata_inference_batch_size_count", model="b") == 1
    assert value(samples, "strata_inference_batch_size_sum", model="b") == 8
    assert {labels["model"] for labels, _ in samples["strata_inference_batch_size_count"]} == {"a", "b"}


def test_each_app_has_its_own_registry(prepared):
    with TestClient(create_app(prepared)) as a, TestClient(create_app(prepared)) as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        count = "strata_http_request_duration_seconds_count"
        assert value(scrape(a), count, route="/healthz") == 2
        assert value(scrape(b), count, route="/healthz") == 1
