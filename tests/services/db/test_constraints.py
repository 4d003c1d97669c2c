"""The schema enforces the invariants the services rely on, on SQLite and Postgres.

Everything a model owns is keyed by ``(model_id, ...)``: the same class index, version number or
alias name may exist once in each model, and no row can point at another model's rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db import migrate
from services.db.models import (
    Alias,
    ApiKey,
    ClassMetric,
    DatasetItem,
    Model,
    ModelVersion,
    SemanticClass,
    Task,
    TaskStatus,
    api_key_models,
)
from services.db.session import make_session_factory, session_scope


@pytest.fixture
def factory(db_settings: Settings, engine: Engine) -> sessionmaker[Session]:
    migrate.upgrade(db_settings)
    return make_session_factory(engine)


@pytest.fixture
def mid(factory: sessionmaker[Session]) -> int:
    """The id of a model named "m"."""
    with session_scope(factory) as s:
        row = Model(name="m")
        s.add(row)
        s.flush()
        return row.id


def _model(factory: sessionmaker[Session], name: str) -> int:
    with session_scope(factory) as s:
        row = Model(name=name)
        s.add(row)
        s.flush()
        return row.id


def _task(model_id: int, **kw) -> Task:
    return Task(model_id=model_id, spec={"classes": ["cat"]}, **kw)


def _version(task: Task, version: int = 1, **kw) -> ModelVersion:
    return ModelVersion(
        model_id=task.model_id,
        version=version,
        task_id=task.id,
        architecture="deeplabv3_mobilenet_v3_large",
        method="ewc",
        hyperparameters={"epochs": 1},
        class_map={"0": "background", "1": "cat"},
        num_classes=2,
        checkpoint_key=f"models/{task.model_id}/checkpoints/{version}/model.pt",
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


def _with_version(factory: sessionmaker[Session], model_id: int, version: int = 1) -> str:
    """A task of the model with the version it produced (and background + cat); returns the task id."""
    with session_scope(factory) as s:
        if s.get(SemanticClass, (model_id, 0)) is None:
            s.add_all([SemanticClass(model_id=model_id, id=0, name="background"),
                       SemanticClass(model_id=model_id, id=1, name="cat")])
        task = _task(model_id)
        s.add(task)
        s.flush()
        s.add(_version(task, version))
        s.flush()
        task.model_version = version
        return task.id


def test_defaults_and_round_trip(factory: sessionmaker[Session], mid: int) -> None:
    with session_scope(factory) as s:
        task = _task(mid)
        s.add(task)
    with session_scope(factory) as s:
        loaded = s.get(Task, task.id)
        assert loaded is not None
        assert (loaded.kind, loaded.status, loaded.attempts, loaded.cancel_requested) == ("train", "queued", 0, False)
        assert loaded.spec == {"classes": ["cat"]} and loaded.progress is None and loaded.model_id == mid
        assert len(loaded.id) == 32
        # Aware UTC datetimes come back on both backends (SQLite stores naive text).
        assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - loaded.created_at) < timedelta(minutes=1)
        model = s.get(Model, mid)
        assert (model.description, model.architecture, model.auto_promote, model.promote_max_old_miou_drop) == (
            "", None, None, None)
        assert model.created_at.tzinfo is not None


def test_naive_datetime_is_refused(factory: sessionmaker[Session], mid: int) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        with session_scope(factory) as s:
            s.add(_task(mid, started_at=datetime(2024, 1, 1, 12, 0)))


def test_model_names_are_unique(factory: sessionmaker[Session], mid: int) -> None:
    _commit_fails(factory, Model(name="m"))


def test_model_ids_are_never_reused(factory: sessionmaker[Session], mid: int) -> None:
    """Object keys hold the id: a model created after one was deleted must not inherit its objects."""
    second = _model(factory, "second")
    with session_scope(factory) as s:
        s.delete(s.get(Model, second))
    assert _model(factory, "third") > second


def test_a_task_belongs_to_a_model(factory: sessionmaker[Session], mid: int) -> None:
    _commit_fails(factory, Task(spec={"classes": ["cat"]}))  # model_id is NOT NULL
    _commit_fails(factory, _task(mid + 1000))  # ... and names an existing model


def test_duplicate_class_name_within_a_model(factory: sessionmaker[Session], mid: int) -> None:
    with session_scope(factory) as s:
        s.add(SemanticClass(model_id=mid, id=0, name="background"))
    _commit_fails(factory, SemanticClass(model_id=mid, id=1, name="background"))
    _commit_fails(factory, SemanticClass(model_id=mid, id=0, name="sky"))  # nor an index twice


def test_same_class_name_and_index_in_two_models(factory: sessionmaker[Session], mid: int) -> None:
    other = _model(factory, "other")
    with session_scope(factory) as s:
        s.add_all([SemanticClass(model_id=m, id=i, name=n) for m in (mid, other)
                   for i, n in ((0, "background"), (1, "cat"))])
        s.add(SemanticClass(model_id=other, id=2, name="dog"))
    with session_scope(factory) as s:
        assert s.get(SemanticClass, (other, 2)).name == "dog" and s.get(SemanticClass, (mid, 2)) is None
    _commit_fails(factory, SemanticClass(model_id=mid + 1000, id=0, name="background"))  # no such model


def test_ignore_index_is_not_a_class(factory: sessionmaker[Session], mid: int) -> None:
    _commit_fails(factory, SemanticClass(model_id=mid, id=255, name="void"))


def test_bad_status(factory: sessionmaker[Session], mid: int) -> None:
    _commit_fails(factory, _task(mid, status="paused"))
    with session_scope(factory) as s:  # every declared status is accepted
        s.add_all(_task(mid, status=st.value) for st in TaskStatus)


def test_bad_split(factory: sessionmaker[Session], mid: int) -> None:
    with session_scope(factory) as s:
        task = _task(mid)
        s.add(task)
    _commit_fails(factory, _item(task.id, split="test"))


def test_second_version_for_same_task(factory: sessionmaker[Session], mid: int) -> None:
    with session_scope(factory) as s:
        task = _task(mid)
        s.add(task)
        s.flush()
        s.add(_version(task, 1))
    _commit_fails(factory, _version(task, 2))


def test_version_numbers_are_per_model(factory: sessionmaker[Session], mid: int) -> None:
    other = _model(factory, "other")
    _with_version(factory, mid, 1)
    _with_version(factory, other, 1)  # the same number in another model
    with session_scope(factory) as s:
        assert {s.get(ModelVersion, (m, 1)).model_id for m in (mid, other)} == {mid, other}
        task = _task(mid)
        s.add(task)
    _commit_fails(factory, _version(task, 1))  # but once per model
    _commit_fails(factory, _version(task, 0))  # and from 1 up


def test_foreign_keys_are_enforced(factory: sessionmaker[Session], mid: int) -> None:
    # On SQLite this only holds because every connection sets PRAGMA foreign_keys=ON.
    _commit_fails(factory, _item("no-such-task"))
    with session_scope(factory) as s:
        task = _task(mid)
        s.add(task)
    _commit_fails(factory, _task(mid, parent_version=99))
    _commit_fails(factory, ClassMetric(model_id=mid, version=99, class_index=0, tp=0, fp=0, fn=0))
    _commit_fails(factory, Alias(model_id=mid, name="production", version=99))


def test_nothing_points_at_another_models_rows(factory: sessionmaker[Session], mid: int) -> None:
    """Version 1 and class 1 exist in model m only: model other's rows cannot name them."""
    _with_version(factory, mid, 1)
    other = _model(factory, "other")
    with session_scope(factory) as s:
        s.add(SemanticClass(model_id=other, id=0, name="background"))
        task = _task(other)
        s.add(task)
    _commit_fails(factory, _task(other, parent_version=1))
    _commit_fails(factory, _version(task, 2, parent_version=1))
    _commit_fails(factory, Alias(model_id=other, name="production", version=1))
    _commit_fails(factory, ClassMetric(model_id=other, version=1, class_index=0, tp=0, fp=0, fn=0))
    with session_scope(factory) as s:
        s.add(_version(task, 1))  # other's own version 1 ...
    _commit_fails(factory, ClassMetric(model_id=other, version=1, class_index=1, tp=0, fp=0, fn=0))  # ... m's cat
    with session_scope(factory) as s:
        s.add(ClassMetric(model_id=other, version=1, class_index=0, iou=None, tp=0, fp=0, fn=0))
        s.add(Alias(model_id=other, name="production", version=1))


def test_duplicate_alias_within_a_model(factory: sessionmaker[Session], mid: int) -> None:
    _with_version(factory, mid, 1)
    _with_version(factory, mid, 2)
    with session_scope(factory) as s:
        s.add(Alias(model_id=mid, name="production", version=1))
    _commit_fails(factory, Alias(model_id=mid, name="production", version=2))


def test_duplicate_stem_in_task(factory: sessionmaker[Session], mid: int) -> None:
    with session_scope(factory) as s:
        task = _task(mid)
        s.add(task)
        s.flush()
        s.add(_item(task.id, "a"))
    _commit_fails(factory, _item(task.id, "a", split="val"))


def test_deleting_task_cascades_to_items(factory: sessionmaker[Session], engine: Engine, mid: int) -> None:
    with session_scope(factory) as s:
        task = _task(mid)
        s.add(task)
        s.flush()
        s.add_all([_item(task.id, "a"), _item(task.id, "b", "val")])
    with engine.begin() as conn:  # a plain DELETE: the database, not the ORM, must cascade
        conn.execute(Task.__table__.delete().where(Task.id == task.id))
    with session_scope(factory) as s:
        assert s.scalars(select(DatasetItem)).all() == []


def test_deleting_a_version_cascades_to_its_metrics(factory: sessionmaker[Session], engine: Engine, mid: int) -> None:
    task_id = _with_version(factory, mid, 1)
    with session_scope(factory) as s:
        s.add(ClassMetric(model_id=mid, version=1, class_index=1, iou=0.5, tp=1, fp=1, fn=0))
        s.get(Task, task_id).model_version = None
    with engine.begin() as conn:
        conn.execute(ModelVersion.__table__.delete().where(ModelVersion.model_id == mid))
    with session_scope(factory) as s:
        assert s.scalars(select(ClassMetric)).all() == []


def test_a_keys_model_list_follows_the_key_and_the_model(factory: sessionmaker[Session], engine: Engine,
                                                          mid: int) -> None:
    other = _model(factory, "other")
    with session_scope(factory) as s:
        key = ApiKey(name="k", prefix="strata_abcde", key_hash="a" * 64, scopes="infer", all_models=False,
                     models=[s.get(Model, mid), s.get(Model, other)])
        s.add(key)
        everything = ApiKey(name="all", prefix="strata_fghij", key_hash="b" * 64, scopes="admin")
        s.add(everything)
    with session_scope(factory) as s:
        assert [m.name for m in s.get(ApiKey, key.id).models] == ["m", "other"]
        assert s.get(ApiKey, everything.id).all_models is True  # the default: every model
    _commit_fails(factory, ApiKey(name="x", prefix="strata_xxxxx", key_hash="a" * 64, scopes="infer"))
    with engine.begin() as conn:  # plain DELETEs: the database cascades the link rows
        conn.execute(Model.__table__.delete().where(Model.id == other))
        assert conn.execute(select(api_key_models.c.model_id)).scalars().all() == [mid]
        conn.execute(ApiKey.__table__.delete().where(ApiKey.id == key.id))
        assert conn.execute(select(api_key_models)).all() == []


def test_circular_task_version_links(factory: sessionmaker[Session], mid: int) -> None:
    """A task points at the version it produced, which points back at the task."""
    with session_scope(factory) as s:
        s.add_all([SemanticClass(model_id=mid, id=0, name="background"),
                   SemanticClass(model_id=mid, id=1, name="cat")])
        first = _task(mid)
        s.add(first)
        s.flush()
        s.add(_version(first, 1, miou_all=0.5))
        s.flush()
        first.model_version = 1
        second = _task(mid, parent_version=1)
        s.add(second)
        s.flush()
        v2 = _version(second, 2, parent_version=1)
        v2.metrics = [
            ClassMetric(class_index=0, iou=0.9, tp=9, fp=1, fn=0),
            ClassMetric(class_index=1, iou=None, tp=0, fp=0, fn=0),
        ]
        s.add(v2)
    with session_scope(factory) as s:
        v2 = s.get(ModelVersion, (mid, 2))
        assert v2 is not None and v2.parent_version == 1
        assert [(m.model_id, m.class_index, m.iou) for m in v2.metrics] == [(mid, 0, 0.9), (mid, 1, None)]
        assert s.get(Task, first.id).model_version == 1


def test_session_scope_rolls_back_on_error(factory: sessionmaker[Session], mid: int) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with session_scope(factory) as s:
            s.add(SemanticClass(model_id=mid, id=0, name="background"))
            s.flush()
            raise RuntimeError("boom")
    with session_scope(factory) as s:
        assert s.scalars(select(SemanticClass)).all() == []
