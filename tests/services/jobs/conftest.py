"""Fixtures of the job tests: models to hang tasks off."""

from __future__ import annotations

import pytest

from services.db.session import session_scope
from services.registry.models import create_model


@pytest.fixture
def models(sessions) -> dict[str, int]:
    """Two models, "a" and "b": their ids by name."""
    with session_scope(sessions) as s:
        return {name: create_model(s, name).id for name in ("a", "b")}


@pytest.fixture
def model(models) -> int:
    return models["a"]
