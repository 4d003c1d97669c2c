"""Model versions for the inference tests, published as the worker publishes them: the checkpoint
written by ``save_model``, uploaded to the object store, and recorded with ``record_version``.

``constant_model`` is a real LR-ASPP network whose answer is known: both classifier convolutions
have zero weights and the high-resolution one a bias that makes channel ``winner`` win everywhere,
so every pixel of every image is that channel's class.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sqlalchemy.orm import Session

from services.db.models import ModelVersion, SemanticClass, Task
from services.db.session import session_scope
from services.learning.checkpoint import save_model
from services.learning.classmap import channel_names
from services.learning.zoo import SegModel, build_model
from services.registry.aliases import promote
from services.registry.versions import get_version, record_version
from services.storage import ObjectStore

ARCH = "lraspp_mobilenet_v3_large"


def constant_model(num_classes: int, winner: int, *, seed: int = 0) -> SegModel:
    """An LR-ASPP model whose argmax is channel ``winner`` at every pixel of any input."""
    torch.manual_seed(seed)
    model = build_model(ARCH, num_classes).eval()
    with torch.no_grad():
        for conv in (model.classifier.low_classifier, model.classifier.high_classifier):
            conv.weight.zero_()
            conv.bias.zero_()
        model.classifier.high_classifier.bias[winner] = 10.0
    return model


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _ensure_classes(session: Session, task_id: str, class_map: Mapping[int, str]) -> None:
    if session.get(Task, task_id) is None:
        session.add(Task(id=task_id, spec={"classes": [n for i, n in sorted(class_map.items()) if i]}))
        session.flush()
    for index, name in sorted(class_map.items()):
        if session.get(SemanticClass, index) is None:
            session.add(SemanticClass(id=index, name=name, task_id=task_id if index else None))
    session.flush()


def publish(
    sessions,
    store: ObjectStore,
    settings,
    *,
    version: int,
    class_map: Mapping[int, str],
    winner: int,
    image_size: int = 32,
    parent: int | None = None,
    to_production: bool = True,
    model: SegModel | None = None,
) -> int:
    """Save, upload and record a version whose model answers channel ``winner`` everywhere
    (or ``model``); make it production when asked. Returns the winner's GLOBAL class index."""
    class_map = dict(sorted(class_map.items()))
    model = model or constant_model(len(class_map), winner, seed=version)
    key = f"checkpoints/{version}/model.pt"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        digest = save_model(path, model, channel_names(class_map), {"version": version})
        info = store.put_file(key, path)
    with session_scope(sessions) as s:
        task_id = f"task-{version}"
        _ensure_classes(s, task_id, class_map)
        old = sorted(int(k) for k in get_version(s, parent).class_map) if parent else []
        record_version(
            s, task=s.get(Task, task_id), parent_version=parent, architecture=ARCH, method="ft",
            hyperparameters={"image_size": image_size}, class_map=class_map, checkpoint_key=key,
            checkpoint_sha256=digest, checkpoint_bytes=info.size, metrics={}, old_classes=old,
            new_classes=sorted(set(class_map) - set(old)), version=version,
            settings=settings.model_copy(update={"auto_promote": False}),
        )
        if to_production:
            promote(s, version)
    return sorted(class_map)[winner]


def set_production(sessions, version: int) -> None:
    with session_scope(sessions) as s:
        promote(s, version)


def version_row(sessions, version: int) -> ModelVersion:
    with sessions() as s:
        return s.get(ModelVersion, version)
