"""A model with many versions and classes, recorded as the worker records them but with made-up
scores and no checkpoints: for views that read the database only (the heat map, the tables) at a
size no test could train. Used by tests/dashboard and bench/bench_dashboard.py."""

from __future__ import annotations

from services.config import Settings
from services.db.models import SemanticClass, Task
from services.db.session import make_engine, make_session_factory, session_scope
from services.registry.models import create_model
from services.registry.versions import record_version
from tests.services.test_registry import score

ARCHITECTURE = "lraspp_mobilenet_v3_large"


def class_name(index: int) -> str:
    return "background" if index == 0 else f"class-{index:02d}-with-a-longish-name"


def made_up_iou(version: int, index: int) -> float:
    """Falls slowly with a class's age, with a little deterministic noise; background stays high."""
    if index == 0:
        return 0.95
    return max(0.0, 0.9 - 0.01 * (version - index) - 0.03 * ((version * 7 + index * 3) % 4))


def seed_many_versions(settings: Settings, model: str, count: int) -> None:
    """Model ``model`` with versions 1..count, version v adding class v (v1: background and class 1)."""
    engine = make_engine(settings)
    try:
        with session_scope(make_session_factory(engine)) as s:
            m = create_model(s, model, "dozens of versions and classes")
            s.add(SemanticClass(model_id=m.id, id=0, name=class_name(0)))
            for v in range(1, count + 1):
                task = Task(id=f"{model}-t{v}", model_id=m.id, status="succeeded", spec={
                    "classes": [class_name(v)], "method": "mib", "architecture": ARCHITECTURE, "image_size": 64,
                    "assigned_classes": {class_name(v): v}})
                s.add(task)
                s.flush()
                s.add(SemanticClass(model_id=m.id, id=v, name=class_name(v), task_id=task.id))
                s.flush()
                record_version(
                    s, task=task, parent_version=v - 1 or None, architecture=ARCHITECTURE,
                    method="mib" if v > 1 else "ft", hyperparameters={},
                    class_map={c: class_name(c) for c in range(v + 1)},
                    checkpoint_key=f"models/{m.id}/checkpoints/{v}/none.pt", checkpoint_sha256="0" * 64,
                    checkpoint_bytes=1000 * v, metrics={c: score(made_up_iou(v, c)) for c in range(v + 1)},
                    old_classes=range(v) if v > 1 else [], new_classes=[v] if v > 1 else [0, 1], settings=settings)
    finally:
        engine.dispose()
