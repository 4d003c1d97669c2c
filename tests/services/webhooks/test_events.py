"""Events become delivery rows in the transaction of the change they announce (both flavours): one
per enabled subscription that wants the event and its model, none for a change rolled back, and
the emit points of tasks, versions and aliases in the order they happen."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.db.models import DeliveryStatus, Model, Task, Webhook, WebhookDelivery
from services.db.session import session_scope
from services.jobs import lifecycle
from services.jobs.progress import ProgressWriter
from services.learning.trainer import Progress
from services.registry.aliases import move_alias, promote
from services.registry.models import create_model
from services.webhooks import events
from services.webhooks.subscriptions import create_webhook, disable
from tests.services.test_registry import V1, V2, record, seed_tasks


def subscribe(sessions, events_=("*",), models=None) -> int:
    with session_scope(sessions) as s:
        return create_webhook(s, url="http://127.0.0.1:9/hook", events=list(events_), models=models).id


def sent(sessions) -> list[WebhookDelivery]:
    with sessions() as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


@pytest.fixture
def models(sessions) -> dict[str, int]:
    with session_scope(sessions) as s:
        return {name: create_model(s, name).id for name in ("north", "south")}


def test_an_event_goes_to_every_enabled_subscription_that_wants_it(sessions, models):
    every = subscribe(sessions)
    succeeded = subscribe(sessions, ["task.succeeded"])
    north = subscribe(sessions, ["task.succeeded", "task.queued"], models=["north"])
    off = subscribe(sessions)
    with session_scope(sessions) as s:
        disable(s.get(Webhook, off), "disabled by request")
    with session_scope(sessions) as s:
        north_row, south_row = (s.get(Model, models[n]) for n in ("north", "south"))
        assert events.emit(s, events.TASK_SUCCEEDED, north_row, {"id": "t1"}) == 3
        assert events.emit(s, events.TASK_SUCCEEDED, south_row, {"id": "t2"}) == 2
        assert events.emit(s, events.TASK_QUEUED, south_row, {"id": "t3"}) == 1
        assert events.emit(s, events.VERSION_RECORDED, None, {}) == 1  # of no model: not for a model filter
    rows = sent(sessions)
    assert [(r.webhook_id, r.payload["data"].get("id")) for r in rows] == [
        (every, "t1"), (succeeded, "t1"), (north, "t1"), (every, "t2"), (succeeded, "t2"), (every, "t3"), (every, None)]
    first = rows[0]
    assert first.payload == {"id": first.event_id, "event": "task.succeeded", "created_at": first.payload["created_at"],
                             "model": "north", "data": {"id": "t1"}}
    assert len({r.event_id for r in rows[:3]}) == 1, "one event, one id, whoever receives it"
    assert len({r.event_id for r in rows}) == 4
    assert all((r.status, r.attempts, r.next_attempt_at is not None) == (DeliveryStatus.PENDING, 0, True) for r in rows)


def test_a_change_rolled_back_announces_nothing(sessions, models):
    subscribe(sessions)
    with pytest.raises(RuntimeError), session_scope(sessions) as s:
        events.emit(s, events.TASK_QUEUED, s.get(Model, models["north"]), {"id": "t1"})
        raise RuntimeError("the change fails after its event was emitted")
    assert sent(sessions) == []


def test_without_subscriptions_nothing_is_written(sessions, models):
    with session_scope(sessions) as s:
        assert events.emit(s, events.TASK_QUEUED, s.get(Model, models["north"]), {"id": "t1"}) == 0
    assert sent(sessions) == []


def test_an_unknown_event_is_a_fault_of_ours(sessions):
    with sessions() as s, pytest.raises(ValueError, match="unknown webhook event 'task.exploded'"):
        events.emit(s, "task.exploded", None, {})


def test_a_tasks_transitions_are_announced_with_its_state(sessions, models):
    subscribe(sessions)
    with session_scope(sessions) as s:
        s.add(Task(id="t1", model_id=models["north"], spec={"classes": ["cat"]}, status="queued"))
        s.add(Task(id="t2", model_id=models["north"], spec={"classes": ["dog"]}, status="queued"))
        s.add(Task(id="t3", model_id=models["north"], spec={"classes": ["fish"]}, status="queued"))
    with session_scope(sessions) as s:
        lifecycle.start(s.get(Task, "t1"), None)
    with session_scope(sessions) as s:
        lifecycle.succeed(s.get(Task, "t1"))
        lifecycle.start(s.get(Task, "t2"), None)
    with session_scope(sessions) as s:
        lifecycle.fail(s, s.get(Task, "t2"), "RuntimeError: out of memory")
        lifecycle.request_cancel(s, "t3")
    rows = sent(sessions)
    assert [(r.event, r.payload["data"]["id"], r.payload["data"]["status"]) for r in rows] == [
        ("task.started", "t1", "running"), ("task.succeeded", "t1", "succeeded"), ("task.started", "t2", "running"),
        ("task.failed", "t2", "failed"), ("task.cancelled", "t3", "cancelled")]
    assert rows[0].payload["data"] == {"id": "t1", "status": "running", "model_version": None, "parent_version": None,
                                       "attempts": 1, "error": None}
    assert rows[3].payload["data"]["error"] == "RuntimeError: out of memory"
    assert rows[4].payload["data"]["error"] == "cancelled by request before training started"
    assert {r.payload["model"] for r in rows} == {"north"}


def test_a_version_is_announced_before_the_aliases_it_moves(sessions, prepared):
    subscribe(sessions, ["version.recorded", "alias.moved"])
    with session_scope(sessions) as s:
        seed_tasks(s, "m")
        record(s, prepared, "t1", None, V1)
        record(s, prepared, "t2", 1, V2)
    rows = sent(sessions)
    assert [(r.event, r.payload["data"].get("version"), r.payload["data"].get("alias")) for r in rows] == [
        ("version.recorded", 1, None), ("alias.moved", None, "latest"), ("alias.moved", None, "production"),
        ("version.recorded", 2, None), ("alias.moved", None, "latest"), ("alias.moved", None, "production")]
    v2 = rows[3].payload["data"]
    assert (v2["parent"], v2["task_id"], v2["promoted"], v2["method"]) == (1, "t2", True, "ilt")
    assert v2["miou_all"] == pytest.approx(sum(V2.values()) / len(V2), abs=1e-6)
    assert rows[5].payload["data"] == {"alias": "production", "from": 1, "to": 2, "automatic": True}


def test_a_persons_move_is_announced_and_a_move_to_where_it_was_is_not(sessions, prepared):
    with session_scope(sessions) as s:
        model = seed_tasks(s, "m")
        record(s, prepared, "t1", None, V1)
        record(s, prepared, "t2", 1, V2)
    subscribe(sessions, ["alias.moved"])
    with session_scope(sessions) as s:
        move_alias(s, model.id, "production", 1)  # a rollback
        move_alias(s, model.id, "candidate", 2)  # a new alias
        move_alias(s, model.id, "candidate", 2)  # no move
        promote(s, model.id, 1)  # already there
    assert [r.payload["data"] for r in sent(sessions)] == [
        {"alias": "production", "from": 2, "to": 1, "automatic": False},
        {"alias": "candidate", "from": None, "to": 2, "automatic": False}]


def report(epoch: int, step: int, epochs: int = 3, steps: int = 4) -> Progress:
    return Progress(epoch=epoch, epochs=epochs, step=step, steps=steps, loss=1.0 / (epoch * steps + step), lr=0.01,
                    images_per_s=10.0)


def test_each_epoch_is_announced_once_at_its_end_even_when_a_redelivery_redoes_it(sessions, models):
    subscribe(sessions, ["task.epoch_finished"])
    with session_scope(sessions) as s:
        s.add(Task(id="t1", model_id=models["north"], spec={"classes": ["cat"]}, status="running"))
    first = ProgressWriter(sessions, "t1")  # throttled as in production: steps within a second are skipped...
    for epoch, step in ((1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2)):
        first(report(epoch, step))  # ... but never an epoch's last step
    assert [(r.payload["data"]["epoch"], r.payload["data"]["epochs"]) for r in sent(sessions)] == [(1, 3)]
    assert sent(sessions)[0].payload["data"]["loss"] == pytest.approx(1 / 8, abs=1e-5)
    second = ProgressWriter(sessions, "t1")  # a redelivery resumes from epoch 1's checkpoint...
    for epoch, step in ((1, 3), (1, 4), (2, 4), (3, 4)):  # ... and re-does the end of epoch 1
        second(report(epoch, step))
    assert [r.payload["data"]["epoch"] for r in sent(sessions)] == [1, 2, 3]
