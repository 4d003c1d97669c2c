"""The schema enforces the invariants the services rely on, on SQLite and Postgres."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db import migrate
from services.db.models import (
    ClassMetric,
    DatasetItem,
    ModelVersion,
    SemanticClass,
    Task,
    TaskStatus,
)
from services.db.session import make_session_factory, session_scope


@pytest.fixture
def factory(db_settings: Settings, engine: Engine) -> sessionmaker[Session]:
    migrate.upgrade(db_settings)
    return make_session_factory(engine)


def _task(**kw) -> Task:
    return Task(spec={"classes": ["cat"]}, **kw)


def _version(task: Task, version: int = 1, **kw) -> ModelVersion:
    return ModelVersion(
        version=version,
        task_id=task.id,
        architecture="deeplabv3_mobilenet_v3_large",
        method="ewc",
        hyperparameters={"epochs": 1},
        class_map={"0": "background", "1": "cat"},
        num_classes=2,
        checkpoint_key=f"checkpoints/v{version}.pt",
        checkpoint_sha256="0" * 64,
        checkpoint_bytes=123,
        **kw,
    )


def _item(task_id: str, stem: str = "a", split: str = "train") -> DatasetItem:
    return DatasetItem(
        task_id=task_id,
        stem=stem,
        split=split,
        image_key=f"datasets/{task_id}/images/{stem}.jpg",
        image_sha256="1" * 64,
        image_bytes=10,
        mask_key=f"datasets/{task_id}/masks/{stem}.png",
        mask_sha256="2" * 64,
        mask_bytes=5,
        width=4,
        height=3,
    )


def _commit_fails(factory: sessionmaker[Session], *rows: object) -> None:
    with pytest.raises(IntegrityError):
        with session_scope(factory) as s:
            s.add_all(rows)
            s.flush()


def test_defaults_and_round_trip(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as s:
        task = _task()
        s.add(task)
    with session_scope(factory) as s:
        loaded = s.get(Task, task.id)
        assert loaded is not None
        assert (loaded.kind, loaded.status, loaded.attempts, loaded.cancel_requested) == ("train", "queued", 0, False)
        assert loaded.spec == {"classes": ["cat"]} and loaded.progress is None
        assert len(loaded.id) == 32
        # Aware UTC datetimes come back on both backends (SQLite stores naive text).
        assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - loaded.created_at) < timedelta(minutes=1)


def test_naive_datetime_is_refused(factory: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        with session_scope(factory) as s:
            s.add(_task(started_at=datetime(2024, 1, 1, 12, 0)))


def test_duplicate_class_name(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as s:
        s.add(SemanticClass(id=0, name="background"))
    _commit_fails(factory, SemanticClass(id=1, name="background"))


def test_ignore_index_is_not_a_class(factory: sessionmaker[Session]) -> None:
    _commit_fails(factory, SemanticClass(id=255, name="void"))


def test_bad_status(factory: sessionmaker[Session]) -> None:
    _commit_fails(factory, _task(status="paused"))
    with session_scope(factory) as s:  # every declared status is accepted
        s.add_all(_task(status=st.value) for st in TaskStatus)


def test_bad_split(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as s:
        task = _task()
        s.add(task)
    _commit_fails(factory, _item(task.id, split="test"))


def test_second_version_for_same_task(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as s:
        task = _task()
        s.add(task)
        s.flush()
        s.add(_version(task, 1))
    _commit_fails(factory, _version(task, 2))


def test_foreign_keys_are_enforced(factory: sessionmaker[Session]) -> None:
    # On SQLite this only holds because every connection sets PRAGMA foreign_keys=ON.
    _commit_fails(factory, _item("no-such-task"))
    with session_scope(factory) as s:
        task = _task()
        s.add(task)
    _commit_fails(factory, _task(parent_version=99))
    _commit_fails(factory, ClassMetric(version=99, class_index=0, tp=0, fp=0, fn=0))


def test_duplicate_stem_in_task(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as s:
        task = _task()
        s.add(task)
        s.flush()
        s.add(_item(task.id, "a"))
    _commit_fails(factory, _item(task.id, "a", split="val"))


def test_deleting_task_cascades_to_items(factory: sessionmaker[Session], engine: Engine) -> None:
    with session_scope(factory) as s:
        task = _task()
        s.add(task)
        s.flush()
        s.add_all([_item(task.id, "a"), _item(task.id, "b", "val")])
    with engine.begin() as conn:  # a plain DELETE: the database, not the ORM, must cascade
        conn.execute(Task.__table__.delete().where(Task.id == task.id))
    with session_scope(factory) as s:
        assert s.scalars(select(DatasetItem)).all() == []


def test_circular_task_version_links(factory: sessionmaker[Session]) -> None:
    """A task points at the version it produced, which points back at the task."""
    with session_scope(factory) as s:
        s.add_all([SemanticClass(id=0, name="background"), SemanticClass(id=1, name="cat")])
        first = _task()
        s.add(first)
        s.flush()
        s.add(_version(first, 1, miou_all=0.5))
        s.flush()
        first.model_version = 1
        second = _task(parent_version=1)
        s.add(second)
        s.flush()
        v2 = _version(second, 2, parent_version=1)
        v2.metrics = [
            ClassMetric(class_index=0, iou=0.9, tp=9, fp=1, fn=0),
            ClassMetric(class_index=1, iou=None, tp=0, fp=0, fn=0),
        ]
        s.add(v2)
    with session_scope(factory) as s:
        v2 = s.get(ModelVersion, 2)
        assert v2 is not None and v2.parent_version == 1
        assert [(m.class_index, m.iou) for m in v2.metrics] == [(0, 0.9), (1, None)]
        assert s.get(Task, first.id).model_version == 1


def test_session_scope_rolls_back_on_error(factory: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with session_scope(factory) as s:
            s.add(SemanticClass(id=0, name="background"))
            s.flush()
            raise RuntimeError("boom")
    with session_scope(factory) as s:
        assert s.scalars(select(SemanticClass)).all() == []
