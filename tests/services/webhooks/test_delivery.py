"""Sending deliveries to a real HTTP receiver on loopback that verifies every signature (both
flavours): delivered, retried with backoff, given up, the subscription disabled after failures in a
row and enabled again; claims that two deliverers never share. The worker runs the same passes
in a thread (tests/worker/test_webhook_delivery.py)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from services.audit import list_events
from services.config import SettingsError, load_settings
from services.db.base import utcnow
from services.db.models import DeliveryStatus, Webhook, WebhookDelivery
from services.db.session import session_scope
from services.registry.models import create_model
from services.webhooks import events
from services.webhooks.delivery import Deliverer, Policy, backoff_delay_s, claim
from services.webhooks.subscriptions import create_webhook, update_webhook
from tests.services.webhooks.receiver import Receiver

SECRET = "a-receivers-secret-1234"
FAST = Policy(timeout_s=2.0, max_attempts=3, backoff_s=0.01, backoff_max_s=0.05, disable_after=5)


# --- the schedule, pure ---------------------------------------------------------------------------
def test_the_backoff_doubles_from_the_first_delay_up_to_its_cap():
    assert [backoff_delay_s(n, 5, 3600) for n in range(1, 13)] == [
        5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert backoff_delay_s(10_000, 5, 3600) == 3600  # no overflow however many attempts


def test_jitter_shortens_a_delay_by_at_most_a_fifth_and_never_lengthens_it():
    assert backoff_delay_s(3, 5, 3600, jitter=0.0) == 20
    assert backoff_delay_s(3, 5, 3600, jitter=0.999) == pytest.approx(16.004)
    assert backoff_delay_s(20, 5, 3600, jitter=0.5) == 3240  # the cap, then the jitter


def test_the_policy_comes_from_the_settings(tmp_path):
    s = load_settings(data_dir=tmp_path, webhook_timeout_s=3, webhook_max_attempts=4, webhook_backoff_s=2,
                      webhook_backoff_max_s=60, webhook_disable_after=9)
    assert Policy.from_settings(s) == Policy(3.0, 4, 2.0, 60.0, 9)
    defaults = load_settings(data_dir=tmp_path)
    assert (defaults.webhook_poll_s, Policy.from_settings(defaults)) == (1.0, Policy(10.0, 8, 5.0, 3600.0, 20))


@pytest.mark.parametrize("env, value, named", [
    ("STRATA_WEBHOOK_MAX_ATTEMPTS", "0", "STRATA_WEBHOOK_MAX_ATTEMPTS"),
    ("STRATA_WEBHOOK_POLL_S", "0", "STRATA_WEBHOOK_POLL_S"),
    ("STRATA_WEBHOOK_TIMEOUT_S", "soon", "STRATA_WEBHOOK_TIMEOUT_S"),
    ("STRATA_WEBHOOK_DISABLE_AFTER", "-1", "STRATA_WEBHOOK_DISABLE_AFTER"),
    ("STRATA_WEBHOOK_BACKOFF_S", "7200", "STRATA_WEBHOOK_BACKOFF_S .7200. must not exceed STRATA_WEBHOOK_BACKOFF_MAX_S"),
])
def test_a_bad_webhook_setting_names_its_variable(monkeypatch, env, value, named):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


# --- on a real database and a real receiver ------------------------------------------------------
@pytest.fixture
def model(sessions):
    with session_scope(sessions) as s:
        return create_model(s, "north")


def subscribe(sessions, url: str, events_=("*",)) -> int:
    with session_scope(sessions) as s:
        return create_webhook(s, url=url, events=list(events_), secret=SECRET).id


def emit(sessions, model, *ids: str) -> None:
    with session_scope(sessions) as s:
        for task_id in ids:
            events.emit(s, events.TASK_SUCCEEDED, s.get(type(model), model.id), {"id": task_id})


def deliveries(sessions) -> list[WebhookDelivery]:
    with sessions() as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def hook(sessions, webhook_id: int) -> Webhook:
    with sessions() as s:
        return s.get(Webhook, webhook_id)


@pytest.fixture
def deliverer(sessions):
    d = Deliverer(sessions, FAST)
    yield d
    d.close()


def test_a_due_delivery_is_posted_signed_and_logged(sessions, model, deliverer):
    with Receiver(SECRET) as receiver:
        hook_id = subscribe(sessions, receiver.url)
        emit(sessions, model, "t1", "t2")
        assert deliverer.run_once() == 2
        assert deliverer.run_once() == 0  # delivered: nothing is due any more
    got = receiver.received
    assert [r.verified for r in got] == [True, True], [r.problem for r in got]
    assert [r.json["data"]["id"] for r in got] == ["t1", "t2"]
    rows = deliveries(sessions)
    first = got[0].headers
    assert first["Content-Type"] == "application/json" and first["Strata-Event"] == "task.succeeded"
    assert first["Strata-Delivery"] == rows[0].event_id == got[0].json["id"]
    assert first["User-Agent"].startswith("strata-webhooks/") and first["Strata-Attempt"] == "1"
    assert got[0].json == rows[0].payload
    for row in rows:
        assert (row.status, row.attempts, row.last_status_code, row.last_error, row.next_attempt_at) == (
            DeliveryStatus.DELIVERED, 1, 200, None, None)
        assert row.delivered_at is not None and row.last_duration_ms >= 0
    assert hook(sessions, hook_id).consecutive_failures == 0


def test_a_refused_delivery_is_retried_after_its_backoff_with_the_same_event_id(sessions, model, deliverer):
    with Receiver(SECRET, answer=lambda n: 500 if n == 0 else 204) as receiver:
        hook_id = subscribe(sessions, receiver.url)
        emit(sessions, model, "t1")
        before = utcnow()
        deliverer.run_once()
        row = deliveries(sessions)[0]
        assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
            DeliveryStatus.PENDING, 1, 500, "HTTP 500: ok")
        assert before < row.next_attempt_at <= utcnow() + timedelta(seconds=FAST.backoff_s)
        assert hook(sessions, hook_id).consecutive_failures == 1
        receiver.wait_for(lambda got: len(got) == 1)
        while deliveries(sessions)[0].status == DeliveryStatus.PENDING:
            deliverer.run_once()
    row = deliveries(sessions)[0]
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (DeliveryStatus.DELIVERED, 2, 204, None)
    assert [r.headers["Strata-Delivery"] for r in receiver.received] == [row.event_id] * 2
    assert [r.headers["Strata-Attempt"] for r in receiver.received] == ["1", "2"]
    assert hook(sessions, hook_id).consecutive_failures == 0  # a success resets the count


def test_after_a_failure_the_subscriptions_later_deliveries_wait_with_it(sessions, model, deliverer):
    """The receiver failing, this pass sends nothing more to it: the order is kept for the retry."""
    with Receiver(SECRET, answer=lambda n: 503 if n == 0 else 200) as receiver:
        subscribe(sessions, receiver.url)
        emit(sessions, model, "t1", "t2", "t3")
        assert deliverer.run_once() == 3
        assert len(receiver.received) == 1
        rows = deliveries(sessions)
        assert [r.attempts for r in rows] == [1, 0, 0]
        assert rows[1].next_attempt_at == rows[2].next_attempt_at == rows[0].next_attempt_at
        while any(r.status == DeliveryStatus.PENDING for r in deliveries(sessions)):
            deliverer.run_once()
    assert [r.json["data"]["id"] for r in receiver.received] == ["t1", "t1", "t2", "t3"]


def test_an_unreachable_receiver_fails_the_attempt_until_the_delivery_is_given_up(sessions, model, deliverer):
    receiver = Receiver(SECRET)  # never up: nothing listens on its port
    subscribe(sessions, receiver.url)
    emit(sessions, model, "t1")
    for attempt in range(1, FAST.max_attempts + 1):
        while deliveries(sessions)[0].attempts < attempt:
            deliverer.run_once()
        row = deliveries(sessions)[0]
        assert row.last_status_code is None and row.last_error.startswith("ConnectError"), row.last_error
    assert (row.status, row.next_attempt_at, row.delivered_at) == (DeliveryStatus.FAILED, None, None)
    assert deliverer.run_once() == 0  # given up: never claimed again


def test_a_receiver_slower_than_the_timeout_fails_the_attempt(sessions, model):
    deliverer = Deliverer(sessions, Policy(timeout_s=0.3, max_attempts=3, backoff_s=0.01, backoff_max_s=0.05))
    try:
        with Receiver(SECRET, delay_s=1.5) as receiver:
            subscribe(sessions, receiver.url)
            emit(sessions, model, "t1")
            deliverer.run_once()
    finally:
        deliverer.close()
    row = deliveries(sessions)[0]
    assert row.last_error.startswith("ReadTimeout") and row.last_status_code is None
    assert 300 <= row.last_duration_ms < 1500


def test_a_subscription_failing_too_often_in_a_row_is_disabled_saying_why(sessions, model, deliverer):
    receiver = Receiver(SECRET, answer=lambda n: 200)  # down for now
    hook_id = subscribe(sessions, receiver.url)
    emit(sessions, model, "t1", "t2")  # 3 attempts each at most: 5 in a row spans both
    while hook(sessions, hook_id).enabled:
        assert deliverer.run_once() or any(r.status == DeliveryStatus.PENDING for r in deliveries(sessions))
    row = hook(sessions, hook_id)
    assert row.consecutive_failures == FAST.disable_after and row.disabled_at is not None
    assert row.disabled_reason.startswith(f"disabled at {row.disabled_at:%Y-%m-%d %H:%M}")
    assert "after 5 failed attempts in a row; the last one: ConnectError" in row.disabled_reason
    with sessions() as s:
        (event,) = list_events(s, action="webhook.disable")
        assert (event.key_id, event.target, event.detail["reason"]) == (None, f"webhook {hook_id}", row.disabled_reason)
    pending = [r for r in deliveries(sessions) if r.status == DeliveryStatus.PENDING]
    assert len(pending) == 1, "the delivery with attempts left waits for the subscription to be enabled"
    assert deliverer.run_once() == 0  # disabled: nothing is claimed
    emit(sessions, model, "t3")  # and nothing new is queued for it
    assert len(deliveries(sessions)) == 2

    with receiver:
        with session_scope(sessions) as s:
            update_webhook(s, hook_id, {"enabled": True})
        row = hook(sessions, hook_id)
        assert (row.enabled, row.disabled_reason, row.disabled_at, row.consecutive_failures) == (True, None, None, 0)
        assert deliverer.run_once() == 1  # due at once, its backoff forgotten
    assert [r.json["data"]["id"] for r in receiver.received] == [pending[0].payload["data"]["id"]]
    assert all(r.verified for r in receiver.received)


def test_claimed_deliveries_are_leased_and_due_again_when_the_lease_ends(sessions, model):
    subscribe(sessions, "http://127.0.0.1:9/hook")
    emit(sessions, model, "t1")
    assert [c.event for c in claim(sessions, FAST)] == ["task.succeeded"]
    assert claim(sessions, FAST) == []  # held by the first claim (its process may still be sending)
    later = utcnow() + timedelta(seconds=FAST.lease_s + 1)
    (again,) = claim(sessions, FAST, now=later)  # its process died: another takes it
    assert (again.attempt, again.secret, again.payload["data"]) == (1, SECRET, {"id": "t1"})


def test_two_deliverers_at_once_send_each_delivery_once(sessions, model):
    """Two workers' passes running together: SKIP LOCKED (Postgres) or BEGIN IMMEDIATE (SQLite)."""
    with Receiver(SECRET, delay_s=0.01) as receiver:
        subscribe(sessions, receiver.url + "/a")
        subscribe(sessions, receiver.url + "/b")
        emit(sessions, model, *(f"t{i}" for i in range(40)))
        pair = [Deliverer(sessions, FAST, batch=7), Deliverer(sessions, FAST, batch=7)]  # each pass takes a few
        claimed = [0, 0]

        def passes(i: int) -> None:
            for _ in range(20):
                claimed[i] += pair[i].run_once()

        try:
            threads = [threading.Thread(target=passes, args=(i,)) for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for d in pair:
                d.close()
    assert all(r.verified for r in receiver.received)
    sent = Counter((r.path, r.json["data"]["id"]) for r in receiver.received)
    assert sent == {(f"/hook/{sub}", f"t{i}"): 1 for sub in "ab" for i in range(40)}
    assert [(r.status, r.attempts) for r in deliveries(sessions)] == [(DeliveryStatus.DELIVERED, 1)] * 80
    assert sum(claimed) == 80 and min(claimed) > 0, claimed  # both took part, neither took another's
