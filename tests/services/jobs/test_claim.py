"""Who runs a task, and from which version: the ordering rules of one lineage, on both databases."""

from __future__ import annotations

import os

import pytest

from services.db.base import utcnow
from services.db.models import ModelVersion, SemanticClass, Task, TaskStatus, WorkerHeartbeat
from services.db.session import make_engine, make_session_factory, session_scope
from services.jobs.claim import Claim, claim, resolve_parent
from services.jobs.lifecycle import fail


@pytest.fixture
def sessions(prepared):
    engine = make_engine(prepared)
    yield make_session_factory(engine)
    engine.dispose()


def add_task(s, status=TaskStatus.QUEUED, after=None, parent=None, **spec) -> Task:
    task = Task(status=status, parent_version=parent,
                spec={"classes": ["x"], "method": "mib", "model": "lraspp_mobilenet_v3_large", "after_task_id": after,
                      "assigned_classes": {}, **spec})
    s.add(task)
    s.flush()
    return task


def add_version(s, task: Task, version: int, parent: int | None = None) -> None:
    s.add(ModelVersion(version=version, parent_version=parent, task_id=task.id, architecture="a", method="ft",
                       hyperparameters={}, class_map={"0": "background"}, num_classes=1,
                       checkpoint_key=f"checkpoints/{version}/model.pt", checkpoint_sha256="0" * 64,
                       checkpoint_bytes=1))
    s.flush()
    task.status, task.model_version = TaskStatus.SUCCEEDED, version


def test_a_task_queued_behind_another_waits_then_starts_from_its_version(sessions):
    with session_scope(sessions) as s:
        first = add_task(s)
        second = add_task(s, after=first.id)
        ids = first.id, second.id
    with session_scope(sessions) as s:
        assert claim(s, ids[1], "me:1").claim is Claim.NOT_READY
        assert claim(s, ids[0], "me:1").claim is Claim.RUN
    with session_scope(sessions) as s:
        add_version(s, s.get(Task, ids[0]), 1)
    with session_scope(sessions) as s:
        result = claim(s, ids[1], "me:1")
        assert (result.claim, result.parent_version) == (Claim.RUN, 1)
        assert s.get(Task, ids[1]).status == TaskStatus.RUNNING and s.get(Task, ids[1]).attempts == 1


def test_behind_a_failed_task_a_step_starts_from_what_that_one_would_have(sessions):
    with session_scope(sessions) as s:
        base = add_task(s)
        add_version(s, base, 1)
        failed = add_task(s, parent=1)
        waiting = add_task(s, after=failed.id)
        fail(s, failed, "boom")
        assert resolve_parent(s, waiting) == (True, 1)


def test_finished_tasks_are_skipped_and_a_live_worker_is_not_raced(sessions):
    with session_scope(sessions) as s:
        done = add_task(s, status=TaskStatus.SUCCEEDED)
        running = add_task(s, status=TaskStatus.RUNNING)
        # A live worker (this very process) holds the running task.
        s.add(WorkerHeartbeat(hostname=f"{os.uname().nodename}:{os.getpid()}", pid=os.getpid(), queue="q",
                              last_seen=utcnow(), current_task_id=running.id))
        ids = done.id, running.id
    with session_scope(sessions) as s:
        assert claim(s, ids[0], "other:1").claim is Claim.SKIP
        assert claim(s, ids[1], "other:1").claim is Claim.NOT_READY  # retried; taken over once it is gone


def test_a_dead_workers_running_task_is_taken_over(sessions):
    with session_scope(sessions) as s:
        running = add_task(s, status=TaskStatus.RUNNING)
        s.add(WorkerHeartbeat(hostname=f"{os.uname().nodename}:999999", pid=999999, queue="q",
                              last_seen=utcnow(), current_task_id=running.id))
        task_id = running.id
    with session_scope(sessions) as s:
        assert claim(s, task_id, "me:1").claim is Claim.RUN


def test_failing_releases_the_class_names(sessions):
    with session_scope(sessions) as s:
        task = add_task(s)
        s.add(SemanticClass(id=7, name="bus", task_id=task.id))
        s.flush()
        fail(s, task, "out of memory")
        s.flush()
        assert s.get(SemanticClass, 7) is None and task.status == TaskStatus.FAILED
