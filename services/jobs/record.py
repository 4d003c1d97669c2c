"""Recording a trained step: the checkpoint uploaded, then ONE transaction writes the version, its
per-class metrics, the aliases the promotion policy allows and the task's success. A step that
cannot be recorded leaves no checkpoint behind (unless it is another attempt's recorded one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import audit
from services.db.models import Model, ModelVersion, TaskStatus
from services.db.session import session_scope
from services.evaluation.metrics import ClassScore
from services.jobs import lifecycle
from services.jobs.context import JobContext
from services.jobs.errors import TaskFinished
from services.jobs.plan import StepPlan
from services.jobs.timings import Stopwatch, with_phases
from services.learning.checkpoint import save_model
from services.learning.classmap import channel_names
from services.learning.config import RESUME_FIELDS
from services.learning.zoo import SegModel
from services.registry.aliases import PRODUCTION, get_alias
from services.registry.versions import next_version_number, record_version
from services.storage.cache import training_dir
from services.storage.keys import checkpoint_key

# What a version's record says about how it was trained, besides the hyperparameters the client set.
RECORDED_SPEC_FIELDS = ("epochs", "batch_size", "image_size", "val_fraction")


def record_step(ctx: JobContext, plan: StepPlan, model: SegModel, scores: Mapping[int, ClassScore], method: str,
                watch: Stopwatch | None = None) -> int:
    """Upload the model and record its version; returns the version number (another attempt's, when
    that one recorded this task's version first). ``watch``: the attempt's phases so far, written on
    the task row with the upload's and the recording's own."""
    watch = watch or Stopwatch()
    with session_scope(ctx.sessions) as session:
        version = next_version_number(session, plan.model_id)
    local = training_dir(ctx.settings.cache_dir, plan.task_id) / "model.pt"
    meta = {"task_id": plan.task_id, "version": version, "parent": plan.parent.version if plan.parent else None,
            "class_indices": sorted(plan.class_map)}
    digest = save_model(local, model, channel_names(plan.class_map), meta)
    key = checkpoint_key(plan.model_id, version, digest)
    with watch.phase("upload"):
        info = ctx.store.put_file(key, local)
    try:
        with session_scope(ctx.sessions) as session:
            with watch.phase("record"):
                return _record(session, ctx, plan, version, key, digest, info.size, scores, method, watch)
    except Exception as err:
        # Nothing references our upload unless it is the recorded version's own: remove it.
        with session_scope(ctx.sessions) as session:
            existing = session.query(ModelVersion).filter_by(task_id=plan.task_id).one_or_none()
        if existing is None or existing.checkpoint_key != key:
            ctx.store.delete(key)
        if existing is not None and isinstance(err, IntegrityError):
            return existing.version  # another attempt recorded this task's one version first
        raise


def _recorded_hyperparameters(plan: StepPlan) -> dict[str, Any]:
    """The spec's fields, every training setting that changes the weights as the step used it
    (the engine's defaults included: a later release may change them), and what the client set."""
    spec = plan.spec
    train = spec.step_config(first=plan.parent is None, step_index=plan.step_index, train={}).train
    effective = {k: getattr(train, k) for k in RESUME_FIELDS}
    return {**{k: getattr(spec, k) for k in RECORDED_SPEC_FIELDS}, **effective, **spec.hyperparameters.given()}


def _record(session: Session, ctx: JobContext, plan: StepPlan, version: int, key: str, digest: str, size: int,
            scores: Mapping[int, ClassScore], method: str, watch: Stopwatch) -> int:
    task = lifecycle.get_task(session, plan.task_id, for_update=True)
    if task.status != TaskStatus.RUNNING:
        # Failed or cancelled meanwhile (by another attempt, or a cancel): its classes and indices
        # were released and may belong to a newer task now, so this result must not be recorded.
        raise TaskFinished(f"task {plan.task_id} is {task.status} already: its result is not recorded")
    # Locked now, so the policy (which locks it again) and the audit event see the same production.
    production = get_alias(session, plan.model_id, PRODUCTION, for_update=True)
    row, decision = record_version(
        session, task=task, parent_version=plan.parent.version if plan.parent else None,
        architecture=plan.architecture, method=method, hyperparameters=_recorded_hyperparameters(plan),
        class_map={str(k): v for k, v in plan.class_map.items()}, checkpoint_key=key,
        checkpoint_sha256=digest, checkpoint_bytes=size,
        metrics={i: (s.iou, s.tp, s.fp, s.fn) for i, s in scores.items()},
        old_classes=plan.old_classes, new_classes=plan.new_classes,
        version=version, settings=ctx.settings,
    )
    if decision.promote:  # no key did it: the service, by the model's promotion policy
        audit.alias_moved(session, None, session.get(Model, plan.model_id), PRODUCTION, production, row.version,
                          automatic=True, task=plan.task_id)
    lifecycle.succeed(task)
    task.timings = with_phases(task.timings, watch, task.attempts)
    return row.version
