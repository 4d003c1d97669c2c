"""Webhooks end to end: a real Celery worker process sends them, in its own thread, to a real HTTP
receiver on loopback that verifies every signature with ``services.webhooks.signing.verify``. A task
submitted through the API is announced from queued to succeeded, in order; a receiver that is down,
then answers 500, then comes back gets its delivery after retries; a receiver that stays down gets
the subscription disabled, saying why, and enabling it again sends what waited (both flavours);
the sender outlives a database outage (PostgreSQL)."""

from __future__ import annotations

import time

import pytest

from services.cli.run import prepare
from services.db.session import make_engine, make_session_factory, session_scope
from services.webhooks.subscriptions import create_webhook, ping
from tests.servers import worker_running
from tests.services.webhooks.receiver import Receiver
from tests.worker.test_training_flow import SMALL, create_model, shapes_zip, submit, wait_task

SECRET = "the-receivers-secret-42"
# Short delays, so retries and disabling take seconds: 0.2, 0.4, 0.5, 0.5, ... s between attempts.
FAST = {"webhook_poll_s": 0.2, "webhook_timeout_s": 2.0, "webhook_backoff_s": 0.2, "webhook_backoff_max_s": 0.5,
        "webhook_max_attempts": 8, "webhook_disable_after": 6}


@pytest.fixture(params=["embedded", "server"])
def settings(request):
    """Both flavours (tests/conftest.py), with the fast webhook settings above."""
    return request.getfixturevalue(f"{request.param}_settings").model_copy(update=FAST)


def subscribe(client, headers, url: str, **body) -> dict:
    r = client.post("/webhooks", json={"url": url, "events": ["*"], "secret": SECRET, **body}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def deliveries(client, headers, webhook_id: int) -> list[dict]:
    return client.get(f"/webhooks/{webhook_id}/deliveries", headers=headers).json()


def wait_until(what, timeout_s: float = 60.0, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := what():
            return value
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s} s: {what.__doc__ or what}")


def test_a_task_is_announced_from_queued_to_succeeded_in_order(client, worker_process, admin_headers, tmp_path):
    h = admin_headers
    create_model(client, h, "shapes")
    with Receiver(SECRET) as receiver:
        hook = subscribe(client, h, receiver.url, models=["shapes"])
        task = submit(client, h, {**SMALL, "classes": ["square", "disc"], "epochs": 2},
                      shapes_zip(tmp_path, [1, 2], 8, seed=1), model="shapes")
        assert wait_task(client, h, task["id"])["status"] == "succeeded"
        got = receiver.wait_for(lambda got: any(r.event == "task.succeeded" for r in got))
    assert all(r.verified for r in got), [r.problem for r in got]
    assert [r.event for r in got] == ["task.queued", "task.started", "task.epoch_finished", "task.epoch_finished",
                                      "version.recorded", "alias.moved", "alias.moved", "task.succeeded"]
    bodies = [r.json for r in got]
    assert {b["model"] for b in bodies} == {"shapes"}
    assert {b["data"].get("id") for b in bodies if b["event"].startswith("task.")} == {task["id"]}
    assert [(b["data"]["epoch"], b["data"]["epochs"]) for b in bodies[2:4]] == [(1, 2), (2, 2)]
    assert all(b["data"]["loss"] > 0 for b in bodies[2:4])
    assert (bodies[4]["data"]["version"], bodies[4]["data"]["task_id"], bodies[4]["data"]["parent"]) == (1, task["id"], None)
    assert [b["data"] for b in bodies[5:7]] == [{"alias": "latest", "from": None, "to": 1, "automatic": True},
                                               {"alias": "production", "from": None, "to": 1, "automatic": True}]
    assert (bodies[7]["data"]["status"], bodies[7]["data"]["model_version"]) == ("succeeded", 1)
    assert [r.headers["Strata-Event"] for r in got] == [b["event"] for b in bodies]
    assert [r.headers["Strata-Delivery"] for r in got] == [b["id"] for b in bodies]
    assert len({b["id"] for b in bodies}) == 8
    log = deliveries(client, h, hook["id"])
    assert [(d["event"], d["status"], d["attempts"], d["last_status_code"]) for d in log[::-1]] == [
        (r.event, "delivered", 1, 200) for r in got]


def test_failing_receivers_get_their_deliveries_after_retries_or_their_subscription_disabled(
        client, worker_process, admin_headers):
    """Two subscriptions at once, neither holding up the other: one's receiver is down, then answers
    500, then comes back, and gets the delivery; the other's stays down, and its subscription is
    disabled saying why, until it is enabled again and what waited goes out."""
    h = admin_headers
    flaky = Receiver(SECRET, answer=lambda n: 500 if n == 0 else 200)  # neither listening yet
    gone = Receiver(SECRET)
    flaky_hook, gone_hook = subscribe(client, h, flaky.url), subscribe(client, h, gone.url)
    flaky_ping, gone_ping = (client.post(f"/webhooks/{w['id']}/ping", headers=h).json() for w in (flaky_hook, gone_hook))

    def refused_twice():
        """two attempts refused by a receiver that is not there"""
        (d,) = deliveries(client, h, flaky_hook["id"])
        return d["attempts"] >= 2 and d

    down = wait_until(refused_twice, timeout_s=30)
    assert (down["status"], down["last_status_code"]) == ("pending", None)
    assert down["last_error"].startswith("ConnectError"), down["last_error"]
    with flaky:  # back on the same port: answers 500 once, then 200
        def delivered():
            """the ping delivered"""
            (d,) = deliveries(client, h, flaky_hook["id"])
            return d["status"] == "delivered" and d

        done = wait_until(delivered, timeout_s=30)
    assert done["attempts"] >= down["attempts"] + 2  # the 500, then the success
    assert (done["last_status_code"], done["last_error"], done["event_id"]) == (200, None, flaky_ping["event_id"])
    assert [r.answered for r in flaky.received] == [500, 200] and all(r.verified for r in flaky.received)
    assert {r.headers["Strata-Delivery"] for r in flaky.received} == {flaky_ping["event_id"]}  # one event, twice
    assert [int(r.headers["Strata-Attempt"]) for r in flaky.received] == [done["attempts"] - 1, done["attempts"]]
    after = client.get(f"/webhooks/{flaky_hook['id']}", headers=h).json()
    assert (after["enabled"], after["consecutive_failures"]) == (True, 0)

    def disabled():
        """the subscription whose receiver stays down disabled"""
        row = client.get(f"/webhooks/{gone_hook['id']}", headers=h).json()
        return not row["enabled"] and row

    row = wait_until(disabled, timeout_s=60)
    assert row["consecutive_failures"] == FAST["webhook_disable_after"]
    assert "after 6 failed attempts in a row; the last one: ConnectError" in row["disabled_reason"]
    assert row["disabled_reason"].startswith("disabled at ") and row["disabled_at"]
    (waiting,) = deliveries(client, h, gone_hook["id"])
    assert (waiting["status"], waiting["attempts"]) == ("pending", 6)  # attempts left: it waits
    time.sleep(4 * FAST["webhook_poll_s"] + FAST["webhook_backoff_max_s"])
    assert deliveries(client, h, gone_hook["id"])[0]["attempts"] == 6, "nothing is sent to a disabled subscription"
    audit = client.get("/audit", params={"action": "webhook.disable"}, headers=h).json()
    assert [(e["key_id"], e["target"]) for e in audit] == [(None, f"webhook {gone_hook['id']}")]

    with gone:
        on = client.patch(f"/webhooks/{gone_hook['id']}", json={"enabled": True}, headers=h).json()
        assert (on["enabled"], on["disabled_reason"], on["consecutive_failures"]) == (True, None, 0)
        got = gone.wait_for(lambda got: len(got) == 1, timeout_s=30)
    assert got[0].verified and got[0].json["id"] == gone_ping["event_id"] and got[0].headers["Strata-Attempt"] == "7"


def test_the_sender_outlives_a_database_outage(server_settings, own_postgres, tmp_path):
    """PostgreSQL dies and comes back under a running worker: its sender thread logs the outage
    (once per distinct problem, not every pass) and sends again once the database is back."""
    settings = server_settings.model_copy(update={"database_url": own_postgres.url, **FAST})
    prepare(settings)
    sessions = make_session_factory(engine := make_engine(settings))
    log = tmp_path / "worker.log"
    with Receiver(SECRET) as receiver, worker_running(settings, log):
        with session_scope(sessions) as s:
            hook_id = create_webhook(s, url=receiver.url, events=["*"], secret=SECRET).id
            ping(s, hook_id)
        receiver.wait_for(lambda got: len(got) == 1)
        engine.dispose()
        own_postgres.stop()
        time.sleep(10 * FAST["webhook_poll_s"])  # ten passes meet no database
        own_postgres.start()
        with session_scope(sessions) as s:
            ping(s, hook_id)
        got = receiver.wait_for(lambda got: len(got) == 2, timeout_s=30)
        assert all(r.verified for r in got)
        warned = [line for line in log.read_text().splitlines() if "webhook delivery:" in line]
        assert 1 <= len(warned) <= 3, warned
    engine.dispose()


