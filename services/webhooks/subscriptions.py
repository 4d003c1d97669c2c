"""Webhook subscriptions: create (the secret shown once), list, read, change, delete, and their
delivery logs. The caller commits.

A subscription names a URL (http or https), the events it wants (``events.EVENTS``, or ``["*"]``
for all), optionally the models whose events it wants (by name; none named: every model's, and
events of no model), and the secret its bodies are signed with (given, at least 16 characters, or
generated). It is disabled by the service after too many failed attempts in a row
(``delivery.py``), or by a person; enabling it again clears the reason and the failure count and
makes its waiting deliveries due at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import DeliveryStatus, Webhook, WebhookDelivery
from services.errors import Conflict, InvalidInput, NotFound
from services.text import reordering_character
from services.webhooks.events import ALL, EVENTS, queue_ping

MAX_URL_CHARS = 2048
MIN_SECRET_CHARS, MAX_SECRET_CHARS = 16, 256
SECRET_PATTERN = rf"[\x21-\x7e]{{{MIN_SECRET_CHARS},{MAX_SECRET_CHARS}}}"  # printable ASCII, no spaces
GENERATED_PREFIX = "whsec_"
SHOWN_SECRET_CHARS = 4  # of a secret, after GENERATED_PREFIX: enough to tell two apart, too few to guess from
MAX_DESCRIPTION_CHARS = 2000
MAX_MODELS = 1000
DEFAULT_LOG_LIMIT = 100
DISABLED_BY_REQUEST = "disabled by request"


class WebhookNotFound(NotFound):
    """No subscription with that id."""


class InvalidWebhook(InvalidInput):
    """A subscription's field is malformed; the message names it."""


class WebhookDisabled(Conflict):
    """The subscription is disabled: nothing is sent to it until it is enabled again."""


# --- the fields ---------------------------------------------------------------------------------
def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, without spaces or control characters."""
    if not isinstance(url, str) or not url:
        raise InvalidWebhook("url: required, e.g. https://example.com/strata-hook")
    if len(url) > MAX_URL_CHARS:
        raise InvalidWebhook(f"url: {len(url)} characters, the limit is {MAX_URL_CHARS}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidWebhook("url: spaces and control characters are not allowed (percent-encode them)")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # port: a malformed one raises here
    except ValueError as err:
        raise InvalidWebhook(f"url: {err}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhook(f"url: the scheme must be http or https, not {parts.scheme or 'none'!r}")
    if not host:
        raise InvalidWebhook("url: it names no host")
    return url


def check_events(names: Sequence[str]) -> list[str]:
    """The events, each once, in ``EVENTS`` order; or ``["*"]`` alone."""
    if not isinstance(names, list | tuple) or not names:
        raise InvalidWebhook(f"events: at least one of {', '.join(EVENTS)}, or [\"{ALL}\"] for all of them")
    if ALL in names:
        if set(names) != {ALL}:
            raise InvalidWebhook(f"events: \"{ALL}\" means every event: send it alone")
        return [ALL]
    unknown = [n for n in dict.fromkeys(names) if n not in EVENTS]
    if unknown:
        raise InvalidWebhook(f"events: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(EVENTS)} "
                             f"(or \"{ALL}\")")
    return [e for e in EVENTS if e in names]


def check_secret(secret: str) -> str:
    if not isinstance(secret, str) or not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise InvalidWebhook(f"secret: {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters")
    if not all("\x21" <= c <= "\x7e" for c in secret):
        raise InvalidWebhook("secret: printable ASCII characters only, without spaces")
    return secret


def check_description(text: str | None) -> str:
    from services.registry.models import has_control_characters  # see check_models

    text = (text or "").strip()
    if has_control_characters(text):
        raise InvalidWebhook("description: control characters are not allowed (line breaks and tabs are)")
    if reordering := reordering_character(text):
        raise InvalidWebhook(f"description: {reordering} is not allowed (it reorders the text after it)")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise InvalidWebhook(f"description: {len(text)} characters, the limit is {MAX_DESCRIPTION_CHARS}")
    return text


def check_models(session: Session, names: Iterable[str] | None) -> list[str] | None:
    """The names of existing models, each once (None: every model)."""
    # Imported here: registry.models imports the promotion policy, which imports torch, and the
    # worker's parent process (whose webhook sender disables subscriptions) must not load it.
    from services.registry.models import ModelNotFound, get_models

    if names is None:
        return None
    wanted = list(dict.fromkeys(names))
    if not wanted or len(wanted) > MAX_MODELS:
        raise InvalidWebhook(f"models: 1 to {MAX_MODELS} model names, or leave it out (null) for every model")
    try:
        return [m.name for m in get_models(session, wanted)]
    except ModelNotFound as err:
        raise InvalidWebhook(f"models: {err}") from None


def new_secret() -> str:
    return GENERATED_PREFIX + secrets.token_urlsafe(32)


def secret_prefix(secret: str) -> str:
    """What reads show of a secret: its first characters (after ``whsec_``, when generated)."""
    head = GENERATED_PREFIX if secret.startswith(GENERATED_PREFIX) else ""
    return secret[:len(head) + SHOWN_SECRET_CHARS]


# --- subscriptions --------------------------------------------------------------------------------
def create_webhook(session: Session, *, url: str, events: Sequence[str], models: Iterable[str] | None = None,
                   secret: str | None = None, description: str | None = None,
                   created_by_key_id: int | None = None) -> Webhook:
    """A new enabled subscription (its ``secret``, given or generated, is on the row: show it once)."""
    row = Webhook(url=check_url(url), events=check_events(events), models=check_models(session, models),
                  secret=check_secret(secret) if secret is not None else new_secret(),
                  description=check_description(description), enabled=True, consecutive_failures=0,
                  created_at=utcnow(), created_by_key_id=created_by_key_id)
    session.add(row)
    session.flush()
    return row


def list_webhooks(session: Session) -> list[Webhook]:
    return list(session.scalars(select(Webhook).order_by(Webhook.id)))


def get_webhook(session: Session, webhook_id: int, *, for_update: bool = False) -> Webhook:
    row = session.get(Webhook, webhook_id, with_for_update={"key_share": True} if for_update else None)
    if row is None:
        raise WebhookNotFound(f"no webhook with id {webhook_id} (GET /webhooks lists them)")
    return row


def public_fields(row: Webhook) -> dict[str, Any]:
    """What a change of the subscription is compared on (the audit log's before and after)."""
    return {"url": row.url, "events": list(row.events), "models": row.models, "description": row.description,
            "enabled": row.enabled}


def update_webhook(session: Session, webhook_id: int, given: Mapping[str, Any]) -> Webhook:
    """Change the fields in ``given`` (``url``, ``events``, ``models``: None for every model,
    ``description``, ``enabled``). Enabling a disabled subscription clears why it was disabled and
    its failure count, and makes its waiting deliveries due now."""
    unknown = set(given) - {"url", "events", "models", "description", "enabled"}
    if unknown:
        raise InvalidWebhook(f"{sorted(unknown)[0]}: unknown field")
    row = get_webhook(session, webhook_id, for_update=True)
    if "url" in given:
        row.url = check_url(given["url"])
    if "events" in given:
        row.events = check_events(given["events"])
    if "models" in given:
        row.models = check_models(session, given["models"])
    if "description" in given:
        row.description = check_description(given["description"])
    if "enabled" in given and given["enabled"] is not None and bool(given["enabled"]) != row.enabled:
        if given["enabled"]:
            enable(session, row)
        else:
            disable(row, DISABLED_BY_REQUEST)
    return row


def enable(session: Session, row: Webhook) -> None:
    row.enabled, row.disabled_reason, row.disabled_at, row.consecutive_failures = True, None, None, 0
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.webhook_id == row.id, WebhookDelivery.status == DeliveryStatus.PENDING.value,
    ).values(next_attempt_at=utcnow()))


def disable(row: Webhook, reason: str) -> None:
    """Nothing more is sent to it; its pending deliveries wait (they go out if it is enabled again)."""
    row.enabled, row.disabled_reason, row.disabled_at = False, reason, utcnow()


def delete_webhook(session: Session, webhook_id: int) -> Webhook:
    """Delete the subscription and its delivery log (ON DELETE CASCADE); returns the deleted row."""
    row = get_webhook(session, webhook_id, for_update=True)
    session.delete(row)
    session.flush()
    return row


def ping(session: Session, webhook_id: int) -> WebhookDelivery:
    """Queue a ``ping`` delivery to the subscription (to try its receiver); refused while disabled."""
    row = get_webhook(session, webhook_id)
    if not row.enabled:
        raise WebhookDisabled(f"webhook {row.id} is disabled ({row.disabled_reason}): enable it first "
                              f"(PATCH /webhooks/{row.id} with {{\"enabled\": true}})")
    delivery = queue_ping(session, row)
    session.flush()
    return delivery


def list_deliveries(session: Session, webhook_id: int, *, status: str | None = None, before_id: int | None = None,
                    limit: int = DEFAULT_LOG_LIMIT) -> list[WebhookDelivery]:
    """The subscription's deliveries newest first, at most ``limit``, with ids below ``before_id``."""
    get_webhook(session, webhook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if status is not None:
        if status not in set(DeliveryStatus):
            raise InvalidWebhook(f"status: choose one of {', '.join(s.value for s in DeliveryStatus)}")
        stmt = stmt.where(WebhookDelivery.status == status)
    if before_id is not None:
        stmt = stmt.where(WebhookDelivery.id < before_id)
    return list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit)))
