"""The outbox of training messages: owed until the broker took them, sent once, re-owed for orphans."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from services.broker import BrokerUnavailable
from services.db.base import utcnow
from services.db.models import Task, TaskStatus, WorkerHeartbeat
from services.db.session import session_scope
from services.jobs import outbox
from services.jobs.heartbeats import STALE_AFTER
from tests.services.jobs.test_claim import add_task, live_worker_holds


class Broker:
    """A send callable that records what it took, and can be down."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.down_after: int | None = None

    def __call__(self, task_id: str) -> None:
        if self.down_after is not None and len(self.taken) >= self.down_after:
            raise BrokerUnavailable("connection refused")
        self.taken.append(task_id)


def owed(sessions) -> list[str]:
    with sessions() as s:
        return sorted(t.id for t in s.query(Task).filter(Task.dispatched_at.is_(None)))


def add_owed(sessions, model_id: int, n: int, status=TaskStatus.QUEUED) -> list[str]:
    with session_scope(sessions) as s:
        return [add_task(s, model_id, status=status).id for _ in range(n)]


def test_owed_messages_are_sent_once_and_stamped(sessions, model):
    ids = add_owed(sessions, model, 3)
    broker = Broker()
    assert outbox.relay(sessions, broker) == ids
    assert owed(sessions) == []
    assert outbox.relay(sessions, broker) == []  # nothing owed: nothing sent again
    assert broker.taken == ids


def test_a_broker_that_fails_midway_keeps_the_rest_owed(sessions, model):
    ids = add_owed(sessions, model, 3)
    broker = Broker()
    broker.down_after = 1
    with pytest.raises(BrokerUnavailable):
        outbox.dispatch(sessions, broker)
    assert owed(sessions) == sorted(ids[1:])  # the first was taken and stamped, the others wait
    broker.down_after = None
    assert outbox.relay(sessions, broker) == ids[1:]
    assert broker.taken == ids


def test_dispatch_of_given_ids_and_finished_tasks_owe_nothing(sessions, model):
    first, second = add_owed(sessions, model, 2)
    add_owed(sessions, model, 1, status=TaskStatus.CANCELLED)
    broker = Broker()
    assert outbox.dispatch(sessions, broker, [second]) == [second]
    assert outbox.relay(sessions, broker) == [first]  # the cancelled one is never sent


def test_a_running_task_whose_worker_died_is_owed_again_once_per_stale_period(sessions, model):
    with session_scope(sessions) as s:
        orphan = add_task(s, model, status=TaskStatus.RUNNING)
        held = add_task(s, model, status=TaskStatus.RUNNING)
        for t in (orphan, held):
            t.dispatched_at = utcnow() - STALE_AFTER - timedelta(seconds=1)
        s.add(WorkerHeartbeat(hostname=f"{os.uname().nodename}:999999", pid=999999, queue="q",
                              last_seen=utcnow(), current_task_id=orphan.id))  # that process is gone
        live_worker_holds(s, held)
        ids = orphan.id, held.id
    broker = Broker()
    assert outbox.relay(sessions, broker) == [ids[0]]
    assert outbox.relay(sessions, broker) == []  # just sent: not again before STALE_AFTER


def test_a_remote_holder_is_judged_by_its_heartbeat_only_after_the_database_was_reachable(sessions, model):
    """After a database outage every heartbeat is stale, the living workers' too: a relay that has
    not reached the database for STALE_AFTER does not take another machine's silence for death."""
    with session_scope(sessions) as s:
        task = add_task(s, model, status=TaskStatus.RUNNING)
        task.dispatched_at = utcnow() - STALE_AFTER - timedelta(seconds=1)
        s.add(WorkerHeartbeat(hostname="another-machine:7", pid=7, queue="q",
                              last_seen=utcnow() - STALE_AFTER - timedelta(seconds=1), current_task_id=task.id))
        task_id = task.id
    broker = Broker()
    fresh = outbox.Relay(sessions, broker)  # just (re)connected
    assert fresh.run_once() == []
    fresh.reachable_since -= STALE_AFTER.total_seconds()  # ... and reachable for STALE_AFTER since
    assert fresh.run_once() == [task_id]
