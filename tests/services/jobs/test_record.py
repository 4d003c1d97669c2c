"""Recording a trained step: one transaction, and no orphaned checkpoint when it cannot be recorded;
a model's versions are numbered and stored apart from every other model's."""

from __future__ import annotations

import pytest

from services.db.models import Alias, SemanticClass, Task, TaskStatus
from services.db.session import make_engine, make_session_factory, session_scope
from services.jobs.context import JobContext
from services.jobs.errors import TaskFinished
from services.jobs.plan import StepPlan
from services.jobs.record import record_step
from services.jobs.spec import ResolvedSpec
from services.learning.zoo import build_model
from services.registry.errors import InvalidVersionRecord
from services.registry.models import create_model
from services.storage import open_store


@pytest.fixture
def ctx(prepared):
    engine = make_engine(prepared)
    yield JobContext(prepared, make_session_factory(engine), open_store(prepared), "me:1")
    engine.dispose()


@pytest.fixture
def models(ctx) -> dict[str, int]:
    with session_scope(ctx.sessions) as s:
        return {name: create_model(s, name).id for name in ("a", "b")}


def plan_for(model_id: int, task_id: str, class_map: dict[int, str]) -> StepPlan:
    spec = ResolvedSpec(classes=["cat"], epochs=1, batch_size=1, image_size=32, method="mib",
                        architecture="lraspp_mobilenet_v3_large", assigned_classes={"cat": 1})
    return StepPlan(task_id=task_id, model_id=model_id, spec=spec, parent=None,
                    architecture="lraspp_mobilenet_v3_large", class_map=class_map, train_items=[], scoring=[])


def add_task(ctx, model_id: int, *class_rows: tuple[int, str]) -> str:
    with session_scope(ctx.sessions) as s:
        task = Task(model_id=model_id, status=TaskStatus.RUNNING,
                    spec={"classes": ["cat"], "method": "mib", "architecture": "lraspp_mobilenet_v3_large"})
        s.add(task)
        s.flush()
        for index, name in class_rows:
            s.add(SemanticClass(model_id=model_id, id=index, name=name, task_id=None if index == 0 else task.id))
        return task.id


def test_a_recorded_step_is_one_version_with_its_checkpoint(ctx, models):
    model_id = models["a"]
    task_id = add_task(ctx, model_id, (0, "background"), (1, "cat"))
    model = build_model("lraspp_mobilenet_v3_large", 2)
    version = record_step(ctx, plan_for(model_id, task_id, {0: "background", 1: "cat"}), model, {}, "ft")
    keys = [o.key for o in ctx.store.list("models/")]
    assert version == 1 and len(keys) == 1 and keys[0].startswith(f"models/{model_id}/checkpoints/1/model-")
    with ctx.sessions() as s:
        task = s.get(Task, task_id)
        assert task.status == TaskStatus.SUCCEEDED and task.model_version == 1
        assert s.get(Alias, (model_id, "latest")).version == 1


def test_a_step_that_cannot_be_recorded_leaves_no_checkpoint_behind(ctx, models):
    task_id = add_task(ctx, models["a"], (0, "background"))  # "cat" is missing from the classes table
    model = build_model("lraspp_mobilenet_v3_large", 2)
    with pytest.raises(InvalidVersionRecord):
        record_step(ctx, plan_for(models["a"], task_id, {0: "background", 1: "cat"}), model, {}, "ft")
    assert list(ctx.store.list("models/")) == []
    with ctx.sessions() as s:
        assert s.get(Task, task_id).model_version is None


def test_an_attempt_that_finishes_after_its_task_failed_records_nothing(ctx, models):
    """Another attempt failed the task meanwhile: its class indices were released and may be a newer
    task's now, so this attempt's result is dropped, with its checkpoint."""
    task_id = add_task(ctx, models["a"], (0, "background"), (1, "cat"))
    with session_scope(ctx.sessions) as s:
        s.get(Task, task_id).status = TaskStatus.FAILED
    with pytest.raises(TaskFinished, match="is failed already"):
        record_step(ctx, plan_for(models["a"], task_id, {0: "background", 1: "cat"}),
                    build_model("lraspp_mobilenet_v3_large", 2), {}, "ft")
    assert list(ctx.store.list("models/")) == []
    with ctx.sessions() as s:
        assert (s.get(Task, task_id).status, s.get(Task, task_id).model_version) == (TaskStatus.FAILED, None)


def test_each_model_numbers_and_stores_its_versions_apart(ctx, models):
    model = build_model("lraspp_mobilenet_v3_large", 2)
    class_map = {0: "background", 1: "cat"}
    a_first = add_task(ctx, models["a"], (0, "background"), (1, "cat"))
    assert record_step(ctx, plan_for(models["a"], a_first, class_map), model, {}, "ft") == 1
    # Model b's classes are its own: a's "cat" does not make b's class map valid.
    b_task = add_task(ctx, models["b"], (0, "background"))
    with pytest.raises(InvalidVersionRecord):
        record_step(ctx, plan_for(models["b"], b_task, class_map), model, {}, "ft")
    with session_scope(ctx.sessions) as s:
        s.add(SemanticClass(model_id=models["b"], id=1, name="cat", task_id=b_task))
    assert record_step(ctx, plan_for(models["b"], b_task, class_map), model, {}, "ft") == 1  # b's own 1
    a_second = add_task(ctx, models["a"])
    assert record_step(ctx, plan_for(models["a"], a_second, class_map), model, {}, "ft") == 2
    keys = sorted(o.key.rsplit("/", 1)[0] for o in ctx.store.list("models/"))
    assert keys == sorted([f"models/{models['a']}/checkpoints/1", f"models/{models['a']}/checkpoints/2",
                           f"models/{models['b']}/checkpoints/1"])
    with ctx.sessions() as s:
        assert s.get(Alias, (models["a"], "latest")).version == 2
        assert s.get(Alias, (models["b"], "latest")).version == 1
