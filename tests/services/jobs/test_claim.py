"""Who runs a task, and from which version: the ordering rules of one model's lineage (and that
different models never wait for each other), on both databases."""

from __future__ import annotations

import os

from services.db.base import utcnow
from services.db.models import ModelVersion, SemanticClass, Task, TaskStatus, WorkerHeartbeat
from services.db.session import session_scope
from services.jobs.claim import Claim, claim, resolve_parent
from services.jobs.lifecycle import fail
from services.jobs.plan import build_plan
from services.jobs.registration import latest_pending


def add_task(s, model_id: int, status=TaskStatus.QUEUED, after=None, parent=None, **spec) -> Task:
    task = Task(model_id=model_id, status=status, parent_version=parent,
                spec={"classes": ["x"], "method": "mib", "architecture": "lraspp_mobilenet_v3_large", "image_size": 64,
                      "after_task_id": after, "assigned_classes": {}, **spec})
    s.add(task)
    s.flush()
    return task


def add_version(s, task: Task, version: int, parent: int | None = None) -> None:
    s.add(ModelVersion(model_id=task.model_id, version=version, parent_version=parent, task_id=task.id,
                       architecture="a", method="ft", hyperparameters={}, class_map={"0": "background"},
                       num_classes=1, checkpoint_key=f"models/{task.model_id}/checkpoints/{version}/model.pt",
                       checkpoint_sha256="0" * 64, checkpoint_bytes=1))
    s.flush()
    task.status, task.model_version = TaskStatus.SUCCEEDED, version


def live_worker_holds(s, task: Task) -> None:
    """A live worker (this very process) is running ``task``."""
    s.add(WorkerHeartbeat(hostname=f"{os.uname().nodename}:{os.getpid()}", pid=os.getpid(), queue="q",
                          last_seen=utcnow(), current_task_id=task.id))
    s.flush()


def test_a_task_queued_behind_another_waits_then_starts_from_its_version(sessions, model):
    with session_scope(sessions) as s:
        first = add_task(s, model)
        second = add_task(s, model, after=first.id)
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


def test_behind_a_failed_task_a_step_starts_from_what_that_one_would_have(sessions, model):
    with session_scope(sessions) as s:
        base = add_task(s, model)
        add_version(s, base, 1)
        failed = add_task(s, model, parent=1)
        waiting = add_task(s, model, after=failed.id)
        fail(s, failed, "boom")
        assert resolve_parent(s, waiting) == (True, 1)


def test_finished_tasks_are_skipped_and_a_live_worker_is_not_raced(sessions, model):
    with session_scope(sessions) as s:
        done = add_task(s, model, status=TaskStatus.SUCCEEDED)
        running = add_task(s, model, status=TaskStatus.RUNNING)
        live_worker_holds(s, running)
        ids = done.id, running.id
    with session_scope(sessions) as s:
        assert claim(s, ids[0], "other:1").claim is Claim.SKIP
        assert claim(s, ids[1], "other:1").claim is Claim.NOT_READY  # retried; taken over once it is gone


def test_a_dead_workers_running_task_is_taken_over(sessions, model):
    with session_scope(sessions) as s:
        running = add_task(s, model, status=TaskStatus.RUNNING)
        s.add(WorkerHeartbeat(hostname=f"{os.uname().nodename}:999999", pid=999999, queue="q",
                              last_seen=utcnow(), current_task_id=running.id))
        task_id = running.id
    with session_scope(sessions) as s:
        assert claim(s, task_id, "me:1").claim is Claim.RUN


def test_failing_releases_the_class_names_of_its_own_model_only(sessions, models):
    with session_scope(sessions) as s:
        task = add_task(s, models["a"])
        other = add_task(s, models["b"])
        s.add(SemanticClass(model_id=models["a"], id=7, name="bus", task_id=task.id))
        s.add(SemanticClass(model_id=models["b"], id=7, name="bus", task_id=other.id))
        s.flush()
        fail(s, task, "out of memory")
        s.flush()
        assert s.get(SemanticClass, (models["a"], 7)) is None and task.status == TaskStatus.FAILED
        assert s.get(SemanticClass, (models["b"], 7)).task_id == other.id


# --- several models ------------------------------------------------------------------------------
def test_a_task_of_another_model_runs_while_one_is_running(sessions, models):
    """Steps of one model run one at a time; a step of another model never waits for them."""
    with session_scope(sessions) as s:
        running = add_task(s, models["a"], status=TaskStatus.RUNNING)
        live_worker_holds(s, running)
        # Each new task queues behind its own model's newest pending task, as registration does.
        a_pending, b_pending = latest_pending(s, models["a"]), latest_pending(s, models["b"])
        assert a_pending is not None and a_pending.id == running.id and b_pending is None
        a_next = add_task(s, models["a"], after=a_pending.id)
        b_first = add_task(s, models["b"], after=None)
        b_next = add_task(s, models["b"], after=latest_pending(s, models["b"]).id)
        ids = running.id, a_next.id, b_first.id, b_next.id
    with session_scope(sessions) as s:
        assert claim(s, ids[1], "other:1").claim is Claim.NOT_READY  # behind a's running step
        result = claim(s, ids[2], "other:1")
        assert (result.claim, result.parent_version, result.model_id) == (Claim.RUN, None, models["b"])
        assert claim(s, ids[3], "other:2").claim is Claim.NOT_READY  # behind b's own running step
    with session_scope(sessions) as s:
        assert s.get(Task, ids[0]).status == s.get(Task, ids[2]).status == TaskStatus.RUNNING
        add_version(s, s.get(Task, ids[2]), 1)  # model b's version 1, while a's step still runs
    with session_scope(sessions) as s:
        result = claim(s, ids[3], "other:2")
        assert (result.claim, result.parent_version) == (Claim.RUN, 1)
        assert claim(s, ids[1], "other:1").claim is Claim.NOT_READY  # a's own predecessor still runs


def test_a_parent_version_is_one_of_the_tasks_own_model(sessions, models):
    """Version 1 exists once per model: a step's parent is the version of its own model."""
    with session_scope(sessions) as s:
        for name in ("a", "b"):
            add_version(s, add_task(s, models[name]), 1)
        add_version(s, add_task(s, models["a"], parent=1), 2, parent=1)
        b_step = add_task(s, models["b"], parent=1)
        b_id = b_step.id
        assert resolve_parent(s, b_step) == (True, 1)
    with session_scope(sessions) as s:
        step = build_plan(s, b_id, 1)
        assert step.model_id == models["b"] and step.parent.model_id == models["b"]
        assert step.parent.checkpoint_key == f"models/{models['b']}/checkpoints/1/model.pt" and step.parent.depth == 1
