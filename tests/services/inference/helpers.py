"""Model versions for the inference tests, published as the worker publishes them: the checkpoint
written by ``save_model``, uploaded to the object store under the model's key, and recorded with
``record_version`` in the model's lineage (``create_model`` first: every version belongs to a model).

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

from services.db.models import Model, ModelVersion, SemanticClass, Task
from services.db.session import session_scope
from services.learning.checkpoint import save_model
from services.learning.classmap import channel_names
from services.learning.zoo import SegModel, build_model
from services.registry import models as registry_models
from services.registry.aliases import promote
from services.registry.versions import get_version, record_version
from services.storage import ObjectStore
from services.storage.keys import checkpoint_key

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


def create_model(sessions, name: str, description: str = "") -> int:
    """A new, empty model; returns its id."""
    with session_scope(sessions) as s:
        return registry_models.create_model(s, name, description).id


def task_id_of(model_id: int, version: int) -> str:
    return f"task-m{model_id}-v{version}"


def _ensure_classes(session: Session, model_id: int, task_id: str, class_map: Mapping[int, str]) -> None:
    row = session.get(Model, model_id)
    row.architecture = row.architecture or ARCH  # as the model's first task fixes it
    if session.get(Task, task_id) is None:
        session.add(Task(id=task_id, model_id=model_id,
                         spec={"classes": [n for i, n in sorted(class_map.items()) if i], "architecture": ARCH,
                               "image_size": 64}))
        session.flush()
    for index, name in sorted(class_map.items()):
        if session.get(SemanticClass, (model_id, index)) is None:
            session.add(SemanticClass(model_id=model_id, id=index, name=name, task_id=task_id if index else None))
    session.flush()


def publish(
    sessions,
    store: ObjectStore,
    settings,
    *,
    model_id: int,
    version: int,
    class_map: Mapping[int, str],
    winner: int,
    image_size: int = 32,
    parent: int | None = None,
    to_production: bool = True,
    model: SegModel | None = None,
) -> int:
    """Save, upload and record a version of model ``model_id`` whose network answers channel
    ``winner`` everywhere (or ``model``); make it the model's production when asked. Returns the
    winner's class index in the model."""
    class_map = dict(sorted(class_map.items()))
    model = model or constant_model(len(class_map), winner, seed=1000 * model_id + version)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        digest = save_model(path, model, channel_names(class_map), {"version": version})
        key = checkpoint_key(model_id, version, digest)
        info = store.put_file(key, path)
    with session_scope(sessions) as s:
        task_id = task_id_of(model_id, version)
        _ensure_classes(s, model_id, task_id, class_map)
        old = sorted(int(k) for k in get_version(s, model_id, parent).class_map) if parent else []
        record_version(
            s, task=s.get(Task, task_id), parent_version=parent, architecture=ARCH, method="ft",
            hyperparameters={"image_size": image_size}, class_map=class_map, checkpoint_key=key,
            checkpoint_sha256=digest, checkpoint_bytes=info.size, metrics={}, old_classes=old,
            new_classes=sorted(set(class_map) - set(old)), version=version,
            settings=settings.model_copy(update={"auto_promote": False}),
        )
        if to_production:
            promote(s, model_id, version)
    return sorted(class_map)[winner]


def set_production(sessions, model_id: int, version: int) -> None:
    with session_scope(sessions) as s:
        promote(s, model_id, version)


def version_row(sessions, model_id: int, version: int) -> ModelVersion:
    with sessions() as s:
        return s.get(ModelVersion, (model_id, version))


def checkpoint_of(sessions, model_id: int, version: int) -> str:
    """The object key of a published version's checkpoint."""
    return version_row(sessions, model_id, version).checkpoint_key
