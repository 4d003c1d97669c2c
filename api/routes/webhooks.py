"""Webhook subscriptions: create (the secret shown once), list, read, change, delete, ping, and each
one's delivery log. Admin keys for every model only: a subscription may hear of every model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import GlobalAdminDep, SessionDep
from api.params import DbInt
from api.schemas.webhooks import DeliveryPublic, WebhookCreate, WebhookCreated, WebhookPublic, WebhookUpdate
from services import audit
from services.db.models import DeliveryStatus, Webhook, WebhookDelivery
from services.webhooks import subscriptions
from services.webhooks.subscriptions import secret_prefix

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
WebhookId = Annotated[DbInt, Path(description="The subscription's id (GET /webhooks).")]
NOT_FOUND = {404: {"description": "no such webhook"}}


def _public(row: Webhook) -> dict:
    return {"id": row.id, "url": row.url, "events": list(row.events), "models": row.models,
            "description": row.description, "secret_prefix": secret_prefix(row.secret), "enabled": row.enabled,
            "disabled_reason": row.disabled_reason, "disabled_at": row.disabled_at,
            "consecutive_failures": row.consecutive_failures, "created_at": row.created_at,
            "created_by_key_id": row.created_by_key_id}


def _delivery(row: WebhookDelivery) -> dict:
    return {"id": row.id, "event": row.event, "event_id": row.event_id, "status": row.status,
            "attempts": row.attempts, "next_attempt_at": row.next_attempt_at, "last_status_code": row.last_status_code,
            "last_error": row.last_error, "last_duration_ms": row.last_duration_ms, "created_at": row.created_at,
            "delivered_at": row.delivered_at, "payload": row.payload}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated)
def post_webhook(body: WebhookCreate, session: SessionDep, caller: GlobalAdminDep, response: Response) -> dict:
    """Subscribe a URL to events. The answer holds the signing secret, the only time it is shown."""
    row = subscriptions.create_webhook(session, url=body.url, events=body.events, models=body.models,
                                       secret=body.secret, description=body.description,
                                       created_by_key_id=caller.key_id)
    audit.record(session, caller, audit.Action.WEBHOOK_CREATE, target=f"webhook {row.id}",
                 detail=subscriptions.public_fields(row))
    session.commit()
    response.headers["Location"] = f"/webhooks/{row.id}"
    return {**_public(row), "secret": row.secret}


@router.get("", response_model=list[WebhookPublic])
def get_webhooks(session: SessionDep, _: GlobalAdminDep) -> list[dict]:
    return [_public(w) for w in subscriptions.list_webhooks(session)]


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=NOT_FOUND)
def get_webhook(webhook_id: WebhookId, session: SessionDep, _: GlobalAdminDep) -> dict:
    return _public(subscriptions.get_webhook(session, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookPublic, responses=NOT_FOUND)
def patch_webhook(webhook_id: WebhookId, body: WebhookUpdate, session: SessionDep, caller: GlobalAdminDep) -> dict:
    """Change the URL, events, models, description; disable it, or enable it again (which clears
    why it was disabled and its failure count: its waiting deliveries go out at once)."""
    given = body.model_dump(include=body.model_fields_set)
    before = subscriptions.public_fields(subscriptions.get_webhook(session, webhook_id))
    row = subscriptions.update_webhook(session, webhook_id, given)
    changed = audit.changes(before, subscriptions.public_fields(row))
    if changed:
        audit.record(session, caller, audit.Action.WEBHOOK_UPDATE, target=f"webhook {row.id}", detail=changed)
    session.commit()
    return _public(row)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_webhook(webhook_id: WebhookId, session: SessionDep, caller: GlobalAdminDep) -> Response:
    """Delete the subscription and its delivery log; what was still to be sent is not sent."""
    row = subscriptions.delete_webhook(session, webhook_id)
    audit.record(session, caller, audit.Action.WEBHOOK_DELETE, target=f"webhook {row.id}", detail={"url": row.url})
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryPublic], responses=NOT_FOUND)
def get_deliveries(
    webhook_id: WebhookId, session: SessionDep, _: GlobalAdminDep,
    status: Annotated[DeliveryStatus | None, Query(description="Only deliveries in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[DbInt | None, Query(description=(
        "Only deliveries older than this one: the `id` of the last delivery of the previous page."))] = None,
) -> list[dict]:
    """The subscription's delivery log, newest first: each event, its state, attempts, the last
    answer (status code, error, duration) and when it is tried next."""
    rows = subscriptions.list_deliveries(session, webhook_id, status=status, before_id=before_id, limit=limit)
    return [_delivery(d) for d in rows]


@router.post("/{webhook_id}/ping", status_code=status.HTTP_202_ACCEPTED, response_model=DeliveryPublic,
             responses={**NOT_FOUND, 409: {"description": "the webhook is disabled"}})
def post_ping(webhook_id: WebhookId, session: SessionDep, _: GlobalAdminDep) -> dict:
    """Queue a `ping` event to the subscription's URL, to try the receiver; the delivery log
    (GET /webhooks/{id}/deliveries) shows how it went."""
    row = subscriptions.ping(session, webhook_id)
    session.commit()
    return _delivery(row)
