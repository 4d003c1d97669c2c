"""Fixtures of the model-resource API tests: keys and a seeded lineage in the client's database."""

from __future__ import annotations

import pytest

from tests.api.test_auth import bearer, make_key
from tests.services.test_registry import seed_lineage


@pytest.fixture
def admin(client) -> dict[str, str]:
    """An admin key for every model."""
    return bearer(make_key(client, ["admin"], "admin"))


@pytest.fixture
def reader(client) -> dict[str, str]:
    """An infer key (it reads, too)."""
    return bearer(make_key(client, ["infer"], "reader"))


@pytest.fixture
def lineage(client, prepared) -> None:
    """Model "m": v1 (background, cat, dog) -> v2 (+ bird, production) -> v3 (+ fish, latest: a
    candidate that forgot 'cat'), as tests/services/test_registry.seed_lineage publishes it."""
    seed_lineage(client.app.state.strata.sessions, prepared)
