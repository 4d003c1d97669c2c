"""The records of version exports (services/registry/exports.py) on both databases: recorded after
their object is stored, the first of two recordings kept, a row of another contract replaced, and
the rows deleted with their version or their model (the keys handed back for the objects)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.db.models import ExportFormat, Task, TaskStatus, VersionExport
from services.db.session import session_scope
from services.registry.exports import delete_exports, find_export, record_export
from services.registry.models import delete_model, get_model
from services.registry.versions import delete_version
from services.storage.keys import KeyOwner, export_key, key_owner
from tests.services.test_registry import seed_lineage

ONNX, TRITON = ExportFormat.ONNX, ExportFormat.TRITON


def key(model_id: int, version: int, format: ExportFormat, digest: str) -> str:
    return export_key(model_id, version, format.value, digest * 64, ".bin")


@pytest.fixture
def model_id(sessions, prepared) -> int:
    """Model "m" with versions 1 -> 2 (production) -> 3, its tasks finished."""
    model_id = seed_lineage(sessions, prepared)
    with session_scope(sessions) as s:
        for task in s.scalars(select(Task)):
            task.status = TaskStatus.SUCCEEDED
    return model_id


def record(sessions, model_id: int, version: int, format: ExportFormat, digest: str, contract: str = "c/1"):
    with session_scope(sessions) as s:
        return record_export(s, model_id, version, format, key=key(model_id, version, format, digest),
                             sha256=digest * 64, size=10, contract=contract)


def test_an_export_is_recorded_and_found(sessions, model_id):
    record_, unused = record(sessions, model_id, 3, ONNX, "a")
    assert unused == [] and (record_.key, record_.sha256, record_.bytes, record_.contract) == (
        key(model_id, 3, ONNX, "a"), "a" * 64, 10, "c/1")
    with sessions() as s:
        assert find_export(s, model_id, 3, ONNX) == record_
        assert find_export(s, model_id, 3, TRITON) is None and find_export(s, model_id, 2, ONNX) is None
    assert key_owner(record_.key) == KeyOwner("export", model_id, None, 3)


def test_the_first_recording_is_kept(sessions, model_id):
    """Two requests exported at once: the second to record serves the first's file and deletes its own."""
    first, _ = record(sessions, model_id, 3, ONNX, "a")
    kept, unused = record(sessions, model_id, 3, ONNX, "b")
    assert kept == first and unused == [key(model_id, 3, ONNX, "b")]
    assert record(sessions, model_id, 3, ONNX, "a") == (first, [])  # the same bytes: nothing to delete


def test_a_record_of_another_contract_is_replaced(sessions, model_id):
    old, _ = record(sessions, model_id, 3, ONNX, "a", contract="c/0")
    new, unused = record(sessions, model_id, 3, ONNX, "b")
    assert unused == [old.key] and (new.key, new.contract) == (key(model_id, 3, ONNX, "b"), "c/1")
    assert new.created_at >= old.created_at


def test_an_export_of_no_version_or_format_is_refused(sessions, model_id):
    with pytest.raises(IntegrityError), session_scope(sessions) as s:
        s.add(VersionExport(model_id=model_id, version=7, format="onnx", key="k", sha256="0" * 64, bytes=1,
                            contract="c/1"))
    with pytest.raises(IntegrityError), session_scope(sessions) as s:
        s.add(VersionExport(model_id=model_id, version=3, format="tflite", key="k", sha256="0" * 64, bytes=1,
                            contract="c/1"))


def test_exports_go_with_their_version(sessions, model_id):
    for version, format in ((3, ONNX), (3, TRITON), (1, ONNX)):
        record(sessions, model_id, version, format, "a")
    with session_scope(sessions) as s:
        objects = delete_version(s, model_id, 3)
    assert objects.exports == sorted([key(model_id, 3, ONNX, "a"), key(model_id, 3, TRITON, "a")])
    assert objects.keys == [objects.checkpoint, *objects.exports]
    with sessions() as s:
        assert [(r.version, r.format) for r in s.scalars(select(VersionExport))] == [(1, "onnx")]
    with session_scope(sessions) as s:
        assert delete_exports(s, model_id) == [key(model_id, 1, ONNX, "a")]
        assert delete_exports(s, model_id) == []


def test_exports_go_with_their_model(sessions, model_id):
    record(sessions, model_id, 2, ONNX, "a")
    with session_scope(sessions) as s:
        delete_model(s, get_model(s, "m"), confirm="m")
    with sessions() as s:
        assert s.scalars(select(VersionExport)).all() == []
