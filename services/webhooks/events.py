"""What a subscription can be told, and how an event becomes deliveries.

``emit`` adds one delivery row per enabled subscription that wants the event (its kind, and its
model when the subscription names models) to the CALLER's transaction: a transactional outbox. The
rows commit with the change they announce or not at all, so a process that dies after the commit
loses no event (a worker sends it later), and a change that is rolled back announces nothing. The
body is fixed here, once: every attempt sends the same event id, so a receiver can deduplicate.

The emit points are one line each: ``jobs/lifecycle.py`` (queued, started, succeeded, failed,
cancelled), ``jobs/progress.py`` (an epoch's end), ``registry/versions.py`` (a version recorded)
and ``registry/aliases.py`` (an alias moved, by a person or by the service).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, true
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import DeliveryStatus, Model, ModelVersion, Task, Webhook, WebhookDelivery

TASK_QUEUED = "task.queued"
TASK_STARTED = "task.started"
TASK_EPOCH_FINISHED = "task.epoch_finished"
TASK_SUCCEEDED = "task.succeeded"
TASK_FAILED = "task.failed"
TASK_CANCELLED = "task.cancelled"
VERSION_RECORDED = "version.recorded"
ALIAS_MOVED = "alias.moved"
# What a subscription may ask for, in the order they happen to a task.
EVENTS = (TASK_QUEUED, TASK_STARTED, TASK_EPOCH_FINISHED, TASK_SUCCEEDED, TASK_FAILED, TASK_CANCELLED,
          VERSION_RECORDED, ALIAS_MOVED)
ALL = "*"  # a subscription's events: every kind, those added later included
PING = "ping"  # a test delivery a person asks for (POST /webhooks/{id}/ping): never subscribed to


def wants(webhook: Webhook, event: str, model: str | None) -> bool:
    """Whether ``webhook`` subscribes to ``event`` of the model named ``model`` (None: of no model)."""
    if ALL not in webhook.events and event not in webhook.events:
        return False
    return webhook.models is None or model in webhook.models


def envelope(event: str, model: str | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """The body of every delivery of one event: a new event id, when it happened, what, of which model."""
    return {"id": uuid.uuid4().hex, "event": event, "created_at": utcnow().isoformat(), "model": model,
            "data": dict(data)}


def emit(session: Session, event: str, model: Model | None, data: Mapping[str, Any]) -> int:
    """Add a delivery of ``event`` for every enabled subscription that wants it to the session's
    transaction; returns how many. ``data`` must be JSON as it is (it is stored and sent as given)."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")  # a fault of ours: every name is above
    # No autoflush: a caller in the middle of building its rows (a task not inserted yet) is not
    # made to write them early; the deliveries reference nothing of theirs.
    with session.no_autoflush:
        hooks = session.scalars(select(Webhook).where(Webhook.enabled == true()).order_by(Webhook.id)).all()
    name = model.name if model is not None else None
    targets = [h for h in hooks if wants(h, event, name)]
    if targets:
        _add(session, targets, envelope(event, name, data))
    return len(targets)


def queue_ping(session: Session, webhook: Webhook) -> WebhookDelivery:
    """A ``ping`` delivery to ``webhook`` alone, whatever it subscribes to (the caller commits)."""
    return _add(session, [webhook], envelope(PING, None, {"webhook_id": webhook.id}))[0]


def _add(session: Session, hooks: list[Webhook], payload: dict[str, Any]) -> list[WebhookDelivery]:
    now = utcnow()
    rows = [WebhookDelivery(webhook_id=h.id, event=payload["event"], event_id=payload["id"], payload=payload,
                            status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=now, created_at=now)
            for h in hooks]
    session.add_all(rows)
    return rows


# --- what each kind of event says ---------------------------------------------------------------
def task_event(session: Session, event: str, task: Task, **extra: Any) -> int:
    """``event`` of a task, with its public state (GET /tasks/{id} has the rest); ``extra`` adds to it."""
    with session.no_autoflush:
        model = session.get(Model, task.model_id)
    data = {"id": task.id, "status": str(task.status), "model_version": task.model_version,
            "parent_version": task.parent_version, "attempts": task.attempts or 0, "error": task.error}
    return emit(session, event, model, {**data, **extra})


def version_event(session: Session, row: ModelVersion) -> int:
    """A version was recorded: its number, lineage, scores and whether the policy promoted it."""
    with session.no_autoflush:
        model = session.get(Model, row.model_id)
    promotion = row.promotion or {}
    return emit(session, VERSION_RECORDED, model, {
        "version": row.version, "parent": row.parent_version, "task_id": row.task_id,
        "architecture": row.architecture, "method": row.method,
        "miou_old": row.miou_old, "miou_new": row.miou_new, "miou_all": row.miou_all,
        "promoted": promotion.get("promote"), "promotion_summary": promotion.get("summary")})


def alias_event(session: Session, model_id: int, alias: str, previous: int | None, version: int, *,
                automatic: bool) -> int:
    """An alias moved from ``previous`` (None: it was not set) to ``version``; ``automatic``: the
    service moved it (``latest``, the promotion policy), not a person. A move to where it was is
    no move: nothing is sent."""
    if previous == version:
        return 0
    with session.no_autoflush:
        model = session.get(Model, model_id)
    return emit(session, ALIAS_MOVED, model, {"alias": alias, "from": previous, "to": version,
                                              "automatic": automatic})
