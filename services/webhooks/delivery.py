"""Sending webhook deliveries: what every worker's delivery thread runs (``worker/webhooks.py``).

One pass (``Deliverer.run_once``):
1. **claim** the deliveries that are due, of enabled subscriptions, oldest first, in one short
   transaction: the rows are locked with ``SKIP LOCKED`` (another worker's pass takes others; on
   SQLite ``BEGIN IMMEDIATE`` serialises the passes) and their ``next_attempt_at`` is pushed to the
   end of a lease, then committed. No transaction stays open while a receiver is called, and a
   worker that dies mid-send leaves rows that are due again when their lease ends.
2. **send** each subscription's deliveries in order (subscriptions in parallel): POST the stored
   body, signed (``signing.py``), with a timeout. A 2xx answer delivers it; anything else
   (another status, a refused connection, a timeout) is a failed attempt. After a failure, the
   subscription's other deliveries of this pass wait with the failed one (its receiver is failing).
3. **record** each attempt in its own transaction: status code, error, duration, attempt count.
   A failed attempt is retried after ``backoff_delay_s`` (doubling from ``webhook_backoff_s``, up to
   ``webhook_backoff_max_s``, less up to ``JITTER`` of it at random), until ``webhook_max_attempts``,
   then the delivery is given up (``failed``). The subscription counts failed attempts in a row over
   all its deliveries (a success resets it); at ``webhook_disable_after`` it is disabled, its
   ``disabled_reason`` saying how many, the last error and when.

Delivery is at least once: a worker that dies between a receiver's answer and its record sends
again, with the same event id (``Strata-Delivery``). Within one subscription deliveries go out in
the order of their events while the receiver answers; a retried one may arrive after later ones.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any

import httpx
from sqlalchemy import select, true, update
from sqlalchemy.orm import Session, sessionmaker

from services import audit
from services.config import Settings
from services.db.base import utcnow
from services.db.models import DeliveryStatus, Webhook, WebhookDelivery
from services.db.session import session_scope
from services.webhooks import signing
from services.webhooks.subscriptions import disable

log = logging.getLogger(__name__)

BATCH = 100  # deliveries claimed per pass; a full batch is followed by another pass at once
SENDERS = 8  # subscriptions sent to at once
JITTER = 0.2  # a retry's delay is shortened by up to this fraction, so retries do not all land at once
MIN_LEASE_S = 60.0
MAX_ERROR_CHARS = 1000
ANSWER_EXCERPT_BYTES = 200  # of a refusing receiver's answer, kept in last_error


def _version() -> str:
    try:
        return metadata.version("strata")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"strata-webhooks/{_version()}"


@dataclass(frozen=True)
class Policy:
    """How deliveries are sent and retried (the ``STRATA_WEBHOOK_*`` settings)."""

    timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_s: float = 5.0
    backoff_max_s: float = 3600.0
    disable_after: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.webhook_timeout_s, settings.webhook_max_attempts, settings.webhook_backoff_s,
                   settings.webhook_backoff_max_s, settings.webhook_disable_after)

    @property
    def lease_s(self) -> float:
        """How long a claim holds its rows: a pass's sends to one subscription must fit in it."""
        return max(MIN_LEASE_S, 10 * self.timeout_s)


def backoff_delay_s(failed_attempts: int, base_s: float, cap_s: float, jitter: float = 0.0) -> float:
    """The delay before the next attempt after ``failed_attempts`` (1, 2, ...) failed ones: base,
    2 x base, 4 x base, ... at most ``cap_s``, shortened by ``JITTER * jitter`` of it (jitter in [0, 1))."""
    exponent = min(failed_attempts - 1, 62)  # 2**62 s is past any cap: no float overflow
    return min(cap_s, base_s * 2.0**exponent) * (1.0 - JITTER * jitter)


@dataclass(frozen=True)
class Claimed:
    """A delivery this pass holds, with what sending it needs (read in the claim's transaction)."""

    id: int
    webhook_id: int
    url: str
    secret: str
    event: str
    event_id: str
    payload: dict[str, Any]
    attempt: int  # this attempt's number, from 1


@dataclass(frozen=True)
class Outcome:
    status_code: int | None  # None: no answer (refused, timed out, ...)
    error: str | None  # None: delivered
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.error is None


def claim(sessions: sessionmaker[Session], policy: Policy, *, limit: int = BATCH,
          now: datetime | None = None) -> list[Claimed]:
    """Take up to ``limit`` due deliveries of enabled subscriptions, oldest first, for a lease."""
    now = now or utcnow()
    with session_scope(sessions) as session:
        stmt = (select(WebhookDelivery, Webhook.url, Webhook.secret)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.status == DeliveryStatus.PENDING.value, WebhookDelivery.next_attempt_at <= now,
                       Webhook.enabled == true())
                .order_by(WebhookDelivery.id).limit(limit)
                # SKIP LOCKED: rows another worker is claiming right now are its own (Postgres).
                .with_for_update(of=WebhookDelivery, skip_locked=True))
        claimed = []
        for row, url, secret in session.execute(stmt).all():
            row.next_attempt_at = now + timedelta(seconds=policy.lease_s)
            claimed.append(Claimed(row.id, row.webhook_id, url, secret, row.event, row.event_id, dict(row.payload),
                                   row.attempts + 1))
    return claimed


def request(item: Claimed, *, now: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt (signed now)."""
    body = json.dumps(item.payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = int(time.time() if now is None else now)
    return body, {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Strata-Event": item.event,
                  "Strata-Delivery": item.event_id, "Strata-Attempt": str(item.attempt),
                  signing.HEADER: signing.sign(item.secret, body, timestamp)}


def send(client: httpx.Client, item: Claimed) -> Outcome:
    """POST one delivery; never raises (what went wrong is the outcome's error)."""
    body, headers = request(item)
    started = time.perf_counter()
    try:
        # Streamed: the answer's body is not read (but for a refusal's first bytes), whatever its size.
        with client.stream("POST", item.url, content=body, headers=headers) as answer:
            code = answer.status_code
            error = None if 200 <= code < 300 else _refusal(answer)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as err:
        code, error = None, _describe(err)
    except Exception as err:  # a fault of ours: the delivery fails visibly, the traceback goes to the log
        log.exception("webhook delivery %s to %s failed unexpectedly", item.id, item.url)
        code, error = None, _describe(err)
    return Outcome(code, error, round((time.perf_counter() - started) * 1000))


def _refusal(answer: httpx.Response) -> str:
    excerpt = b""
    try:
        for chunk in answer.iter_bytes():
            excerpt += chunk
            if len(excerpt) >= ANSWER_EXCERPT_BYTES:
                break
    except httpx.HTTPError:
        pass
    text = " ".join(excerpt[:ANSWER_EXCERPT_BYTES].decode("utf-8", "replace").split())
    return f"HTTP {answer.status_code}" + (f": {text}" if text else "")


def _describe(err: BaseException) -> str:
    detail = str(err).strip()
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__


def record(sessions: sessionmaker[Session], item: Claimed, outcome: Outcome, policy: Policy, *,
           now: datetime | None = None, rand: Callable[[], float] = random.random) -> datetime | None:
    """Write one attempt's outcome; returns when the delivery is due again (None: it ended, or its
    subscription was deleted meanwhile)."""
    now = now or utcnow()
    with session_scope(sessions) as session:
        # The subscription first, then the delivery: the order every writer of both takes.
        hook = session.get(Webhook, item.webhook_id, with_for_update={"key_share": True})
        row = session.get(WebhookDelivery, item.id, with_for_update=True)
        if hook is None or row is None or row.status != DeliveryStatus.PENDING.value:
            return None
        row.attempts += 1
        row.last_status_code, row.last_duration_ms = outcome.status_code, outcome.duration_ms
        row.last_error = outcome.error[:MAX_ERROR_CHARS] if outcome.error else None
        if outcome.delivered:
            row.status, row.delivered_at, row.next_attempt_at = DeliveryStatus.DELIVERED.value, now, None
            hook.consecutive_failures = 0
            return None
        hook.consecutive_failures += 1
        if row.attempts >= policy.max_attempts:
            row.status, row.next_attempt_at = DeliveryStatus.FAILED.value, None
        else:
            delay = backoff_delay_s(row.attempts, policy.backoff_s, policy.backoff_max_s, rand())
            row.next_attempt_at = now + timedelta(seconds=delay)
        log.info("webhook %s: %s delivery %s, attempt %s failed (%s); %s", hook.id, row.event, row.id, row.attempts,
                 row.last_error, f"next at {row.next_attempt_at:%H:%M:%S}" if row.next_attempt_at else "given up")
        if hook.enabled and hook.consecutive_failures >= policy.disable_after:
            _give_up_on(session, hook, row.last_error or "failed", now)
        return row.next_attempt_at


def _give_up_on(session: Session, hook: Webhook, error: str, now: datetime) -> None:
    reason = (f"disabled at {now:%Y-%m-%d %H:%M:%S} UTC after {hook.consecutive_failures} failed attempts in a row; "
              f"the last one: {error}")
    disable(hook, reason)
    audit.record(session, None, audit.Action.WEBHOOK_DISABLE, target=f"webhook {hook.id}",
                 detail={"url": hook.url, "reason": reason})
    log.warning("webhook %s (%s) %s", hook.id, hook.url, reason)


def release(sessions: sessionmaker[Session], ids: Iterable[int], at: datetime) -> None:
    """Hand back claimed deliveries that this pass did not send: due again at ``at``."""
    ids = list(ids)
    if ids:
        with session_scope(sessions) as session:
            session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id.in_(ids), WebhookDelivery.status == DeliveryStatus.PENDING.value,
            ).values(next_attempt_at=at))


class Deliverer:
    """Passes of claim, send, record, with one HTTP client and a pool of senders (close it)."""

    def __init__(self, sessions: sessionmaker[Session], policy: Policy, *, client: httpx.Client | None = None,
                 batch: int = BATCH) -> None:
        self.sessions, self.policy, self.batch = sessions, policy, batch
        # No redirects: a receiver answers for its own URL (a 3xx is a failed attempt).
        self.client = client or httpx.Client(timeout=policy.timeout_s, follow_redirects=False)
        self.senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook-send")

    def run_once(self) -> int:
        """One pass; returns how many deliveries it claimed. Raises what the database raised."""
        items = claim(self.sessions, self.policy, limit=self.batch)
        groups: dict[int, list[Claimed]] = {}
        for item in items:
            groups.setdefault(item.webhook_id, []).append(item)
        claimed_at = time.monotonic()
        futures = [self.senders.submit(self._send_all, group, claimed_at) for group in groups.values()]
        for future in futures:
            future.result()
        return len(items)

    def _send_all(self, group: list[Claimed], claimed_at: float) -> None:
        """One subscription's deliveries of this pass, in order, while the lease lasts and the receiver answers."""
        for i, item in enumerate(group):
            if time.monotonic() - claimed_at > self.policy.lease_s - 3 * self.policy.timeout_s:
                release(self.sessions, [g.id for g in group[i:]], utcnow())  # another pass sends them
                return
            outcome = send(self.client, item)
            due = record(self.sessions, item, outcome, self.policy)
            if not outcome.delivered:
                release(self.sessions, [g.id for g in group[i + 1:]], due or utcnow())
                return

    def close(self) -> None:
        self.senders.shutdown(wait=True, cancel_futures=True)
        self.client.close()
