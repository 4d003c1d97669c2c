"""Recording a trained step: one transaction, and no orphaned checkpoint when it cannot be recorded."""

from __future__ import annotations

import pytest

from services.db.models import SemanticClass, Task, TaskStatus
from services.db.session import make_engine, make_session_factory, session_scope
from services.jobs.context import JobContext
from services.jobs.plan import StepPlan
from services.jobs.record import record_step
from services.jobs.spec import ResolvedSpec
from services.learning.zoo import build_model
from services.registry.errors import InvalidVersionRecord
from services.storage import open_store


@pytest.fixture
def ctx(prepared):
    engine = make_engine(prepared)
    yield JobContext(prepared, make_session_factory(engine), open_store(prepared), "me:1")
    engine.dispose()


def plan_for(task_id: str, class_map: dict[int, str]) -> StepPlan:
    spec = ResolvedSpec(classes=["cat"], epochs=1, batch_size=1, image_size=32, method="mib",
                        model="lraspp_mobilenet_v3_large", assigned_classes={"cat": 1})
    return StepPlan(task_id=task_id, spec=spec, parent=None, architecture="lraspp_mobilenet_v3_large",
                    class_map=class_map, train_items=[], scoring=[])


def add_task(ctx, *class_rows: tuple[int, str]) -> str:
    with session_scope(ctx.sessions) as s:
        task = Task(status=TaskStatus.RUNNING, spec={"classes": ["cat"], "method": "mib",
                                                     "model": "lraspp_mobilenet_v3_large"})
        s.add(task)
        s.flush()
        for index, name in class_rows:
            s.add(SemanticClass(id=index, name=name, task_id=None if index == 0 else task.id))
        return task.id


def test_a_recorded_step_is_one_version_with_its_checkpoint(ctx):
    task_id = add_task(ctx, (0, "background"), (1, "cat"))
    model = build_model("lraspp_mobilenet_v3_large", 2)
    version = record_step(ctx, plan_for(task_id, {0: "background", 1: "cat"}), model, {}, "ft")
    keys = [o.key for o in ctx.store.list("checkpoints/")]
    assert version == 1 and len(keys) == 1 and keys[0].startswith("checkpoints/1/model-")
    with ctx.sessions() as s:
        task = s.get(Task, task_id)
        assert task.status == TaskStatus.SUCCEEDED and task.model_version == 1


def test_a_step_that_cannot_be_recorded_leaves_no_checkpoint_behind(ctx):
    task_id = add_task(ctx, (0, "background"))  # "cat" is missing from the classes table
    model = build_model("lraspp_mobilenet_v3_large", 2)
    with pytest.raises(InvalidVersionRecord):
        record_step(ctx, plan_for(task_id, {0: "background", 1: "cat"}), model, {}, "ft")
    assert list(ctx.store.list("checkpoints/")) == []
    with ctx.sessions() as s:
        assert s.get(Task, task_id).model_version is None
