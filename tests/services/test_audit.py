"""The audit log on a real database (both flavours): events are written in the action's transaction
(gone when it rolls back), keep the actor's and the model's names, list newest first with filters
and a cursor; registration and the worker's automatic promotion write theirs."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services import audit
from services.audit import Action
from services.auth import Caller, create_key
from services.db.models import AuditEvent, Model
from services.db.session import session_scope
from services.jobs.errors import RegistrationConflict
from services.jobs.record import record_step
from services.jobs.registration import IngestLimits, register_task
from services.learning.zoo import build_model
from services.registry.models import ModelChanges, create_model, delete_model, update_model
from services.storage import open_store
from tests.services.jobs.test_record import add_task, ctx, plan_for  # noqa: F401  (ctx: a fixture)
from tests.services.jobs.test_registration import Upload


@pytest.fixture
def actor(sessions) -> Caller:
    with session_scope(sessions) as s:
        key, _ = create_key(s, "ops", ["admin"])
        return Caller.of(key)


def events(sessions, **filters) -> list[tuple]:
    """(action, key id, model name, target, detail) of the listed events, newest first."""
    with sessions() as s:
        return [(e.action, e.key_id, e.model_name, e.target, e.detail) for e in audit.list_events(s, **filters)]


def count(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def test_an_event_names_its_actor_and_model_and_outlives_them(sessions, actor):
    with session_scope(sessions) as s:
        model = create_model(s, "north")
        event = audit.record(s, actor, Action.MODEL_CREATE, model=model, target="model north")
    with session_scope(sessions) as s:  # the model goes; its history stays, by name
        delete_model(s, s.get(Model, model.id), confirm=None)
    with sessions() as s:
        row = s.get(AuditEvent, event.id)
        assert (row.key_id, row.key_name, row.key_prefix) == (actor.key_id, "ops", actor.prefix)
        assert (row.action, row.model_id, row.model_name, row.target, row.detail) == (
            "model.create", model.id, "north", "model north", {})
        assert row.at.tzinfo is not None
    with session_scope(sessions) as s:
        system = audit.record(s, None, Action.KEY_REVOKE, target="key 9")
    with sessions() as s:
        row = s.get(AuditEvent, system.id)
        assert (row.key_id, row.key_name, row.key_prefix, row.model_id, row.model_name) == (None,) * 5


def test_an_event_is_committed_with_its_action_or_not_at_all(sessions, actor):
    with pytest.raises(RuntimeError), session_scope(sessions) as s:
        model = create_model(s, "north")
        audit.record(s, actor, Action.MODEL_CREATE, model=model)
        raise RuntimeError("the action failed after the event was added")
    assert count(sessions) == 0
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Model)) == 0


@pytest.mark.parametrize("alias, previous, version, action, target", [
    ("production", 2, 3, "version.promote", "version 3"),
    ("production", None, 1, "version.promote", "version 1"),
    ("production", 3, 1, "version.rollback", "version 1"),
    ("candidate", 3, 1, "alias.set", "alias candidate"),
])
def test_moves_of_production_are_promotions_or_rollbacks(sessions, actor, alias, previous, version, action, target):
    with session_scope(sessions) as s:
        model = create_model(s, "m")
        audit.alias_moved(s, actor, model, alias, previous, version)
    assert events(sessions) == [(action, actor.key_id, "m", target, {"from": previous, "to": version})]


def test_changes_lists_what_moved():
    assert audit.changes({"a": 1, "b": None}, {"a": 1, "b": 2.5}) == {"b": {"from": None, "to": 2.5}}


def test_events_list_newest_first_with_filters_and_a_cursor(sessions, actor):
    with session_scope(sessions) as s:
        north, south = create_model(s, "north"), create_model(s, "south")
        for i in range(5):
            audit.record(s, actor if i % 2 else None, Action.TASK_CREATE, model=north if i < 3 else south,
                         target=f"task {i}")
        audit.record(s, actor, Action.KEY_CREATE, target="key 2")
    every = events(sessions)
    assert [e[3] for e in every] == ["key 2", "task 4", "task 3", "task 2", "task 1", "task 0"]
    assert [e[3] for e in events(sessions, model="north")] == ["task 2", "task 1", "task 0"]
    assert [e[3] for e in events(sessions, action=Action.KEY_CREATE)] == ["key 2"]
    assert [e[3] for e in events(sessions, key_id=actor.key_id)] == ["key 2", "task 3", "task 1"]
    assert [e[3] for e in events(sessions, model="gone")] == []
    with sessions() as s:
        page = audit.list_events(s, limit=4)
        rest = audit.list_events(s, limit=4, before_id=page[-1].id)
    assert [e.target for e in page + rest] == [e[3] for e in every]


# --- registration and the worker ------------------------------------------------------------------
def test_a_registered_task_writes_one_event_and_a_refused_one_none(sessions, prepared, actor, tmp_path):
    with session_scope(sessions) as s:
        model_id = create_model(s, "m").id
    store, limits = open_store(prepared), IngestLimits.from_settings(prepared)

    def register(spec: dict, name: str):
        up = Upload(tmp_path / name).dataset(3, len(spec["classes"]))
        return register_task(sessions, store, model_id, up.received(spec), up.root / "work", limits, actor=actor)

    task = register({"classes": ["cat", "dog"]}, "first")
    assert events(sessions) == [("task.create", actor.key_id, "m", f"task {task.task_id}",
                                 {"classes": ["cat", "dog"], "method": "mib", "items": 3, "format": "masks"})]
    with pytest.raises(RegistrationConflict):
        register({"classes": ["cat"]}, "again")  # the model has a cat already
    assert count(sessions) == 1


def test_the_workers_automatic_promotion_is_the_services(ctx, sessions):  # noqa: F811
    with session_scope(sessions) as s:
        auto, manual = create_model(s, "auto"), create_model(s, "manual")
        update_model(s, manual, ModelChanges(given=frozenset({"auto_promote"}), auto_promote=False))
        ids = auto.id, manual.id
    net = build_model("lraspp_mobilenet_v3_large", 2)
    tasks = [add_task(ctx, model_id, (0, "background"), (1, "cat")) for model_id in ids]
    for model_id, task_id in zip(ids, tasks):
        assert record_step(ctx, plan_for(model_id, task_id, {0: "background", 1: "cat"}), net, {}, "ft") == 1
    # Only the model whose policy promoted has an event; no key did it.
    assert events(sessions) == [("version.promote", None, "auto", "version 1",
                                 {"from": None, "to": 1, "automatic": True, "task": tasks[0]})]
