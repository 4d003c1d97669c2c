"""/webhooks through the real app (both flavours): subscriptions created (the secret shown once),
read, changed, disabled and enabled, deleted; every bad field a 422 naming it; 404s; admin keys for
every model only; the audit log; ping; the delivery log and its paging; and the events the API's
own actions and a finished task queue. Sending them is tests/worker/test_webhook_delivery.py's."""

from __future__ import annotations

import pytest

from services.webhooks.events import EVENTS
from tests.api.test_audit import key
from tests.api.test_models import finish, new_model, register

URL = "https://example.com/strata-hook"


def create(client, headers, **body) -> dict:
    r = client.post("/webhooks", json={"url": URL, "events": ["*"], **body}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def log(client, headers, webhook_id: int, **query) -> list[dict]:
    r = client.get(f"/webhooks/{webhook_id}/deliveries", params=query, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_subscription_is_created_its_secret_shown_once(client, admin):
    new_model(client, admin, "north")
    r = client.post("/webhooks", json={"url": URL, "events": ["task.succeeded", "task.queued", "task.succeeded"],
                                       "models": ["north"], "description": " deploy bot "}, headers=admin)
    assert r.status_code == 201, r.text
    made = r.json()
    assert r.headers["location"] == f"/webhooks/{made['id']}"
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 40
    assert made["secret_prefix"] == made["secret"][:10]
    assert (made["url"], made["events"], made["models"], made["description"]) == (
        URL, ["task.queued", "task.succeeded"], ["north"], "deploy bot")  # in EVENTS order, each once
    assert (made["enabled"], made["disabled_reason"], made["consecutive_failures"]) == (True, None, 0)
    shown = client.get(f"/webhooks/{made['id']}", headers=admin).json()
    assert "secret" not in shown and shown == {k: v for k, v in made.items() if k != "secret"}
    assert client.get("/webhooks", headers=admin).json() == [shown]


def test_a_given_secret_is_kept_and_only_its_prefix_read_back(client, admin):
    made = create(client, admin, secret="my-own-secret-0123456789")
    assert made["secret"] == "my-own-secret-0123456789" and made["secret_prefix"] == "my-o"
    assert "my-own-secret" not in client.get("/webhooks", headers=admin).text


@pytest.mark.parametrize("body, named", [
    ({"url": "ftp://example.com/x"}, "body.url: the scheme must be http or https, not 'ftp'"),
    ({"url": "https:///path-only"}, "body.url: it names no host"),
    ({"url": "example.com/hook"}, "body.url: the scheme must be http or https"),
    ({"url": "https://exa mple.com/"}, "body.url: spaces and control characters are not allowed"),
    ({"url": "http://example.com:99999/"}, "body.url: Port out of range"),
    ({"url": "https://e.com/" + "x" * 2048}, "body.url: String should have at most 2048 characters"),
    ({"url": None}, "body.url: Input should be a valid string"),
    ({"events": []}, "body.events: List should have at least 1 item"),
    ({"events": ["task.exploded"]}, "body.events.0: Input should be 'task.queued'"),
    ({"events": ["*", "task.queued"]}, "body.events: \"*\" means every event: send it alone"),
    ({"events": "task.queued"}, "body.events: Input should be a valid list"),
    ({"models": []}, "body.models: List should have at least 1 item"),
    ({"models": ["nope"]}, "models: no model named 'nope'"),
    ({"models": ["a b"]}, "body.models.0: String should match pattern"),
    ({"secret": "too-short"}, "body.secret: String should match pattern"),
    ({"secret": "has spaces in the secret"}, "body.secret: String should match pattern"),
    ({"description": "x\u202ey"}, "body.description: U+202E (RIGHT-TO-LEFT OVERRIDE) is not allowed"),
    ({"colour": "blue"}, "body.colour: unknown key"),
])
def test_every_bad_field_is_a_422_naming_it_and_stores_nothing(client, admin, body, named):
    r = client.post("/webhooks", json={"url": URL, "events": ["*"], **body}, headers=admin)
    assert r.status_code == 422, r.text
    assert named in r.json()["detail"], r.json()["detail"]
    assert client.get("/webhooks", headers=admin).json() == []
    assert [e for e in client.get("/audit", headers=admin).json() if e["action"].startswith("webhook.")] == []


def test_every_event_name_can_be_subscribed_to(client, admin):
    assert create(client, admin, events=list(EVENTS))["events"] == list(EVENTS)


@pytest.mark.parametrize("method, path", [
    ("GET", "/webhooks/999"), ("PATCH", "/webhooks/999"), ("DELETE", "/webhooks/999"),
    ("GET", "/webhooks/999/deliveries"), ("POST", "/webhooks/999/ping")])
def test_an_unknown_webhook_is_a_404(client, admin, method, path):
    r = client.request(method, path, json={"enabled": True} if method == "PATCH" else None, headers=admin)
    assert r.status_code == 404 and r.json() == {"detail": "no webhook with id 999 (GET /webhooks lists them)"}


@pytest.mark.parametrize("path, named", [("/webhooks/0", "path.webhook_id"), ("/webhooks/2147483648", "path.webhook_id"),
                                         ("/webhooks/x/deliveries", "path.webhook_id")])
def test_an_id_that_cannot_be_one_is_a_422(client, admin, path, named):
    r = client.get(path, headers=admin)
    assert r.status_code == 422 and r.json()["detail"].startswith(named)


def test_only_an_admin_key_for_every_model_may_touch_webhooks(client, admin):
    new_model(client, admin, "north")
    made = create(client, admin)
    _, limited = key(client, "north admin", ["admin"], ["north"])
    _, reader = key(client, "reader", ["read", "infer"])
    for headers, why in ((limited, "limited to some models"), (reader, "scope 'admin'")):
        for method, path in (("GET", "/webhooks"), ("POST", "/webhooks"), ("GET", f"/webhooks/{made['id']}"),
                             ("PATCH", f"/webhooks/{made['id']}"), ("DELETE", f"/webhooks/{made['id']}"),
                             ("GET", f"/webhooks/{made['id']}/deliveries"), ("POST", f"/webhooks/{made['id']}/ping")):
            r = client.request(method, path, json={"url": URL, "events": ["*"]}, headers=headers)
            assert r.status_code == 403 and why in r.json()["detail"], (method, path, r.text)
    assert client.get("/webhooks").status_code == 401


def test_a_change_applies_only_the_fields_sent_and_is_audited(client, admin):
    new_model(client, admin, "north")
    made = create(client, admin, models=["north"], description="bot")
    r = client.patch(f"/webhooks/{made['id']}", json={"events": ["alias.moved"], "url": URL + "/v2"}, headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["events"], r.json()["url"], r.json()["models"], r.json()["description"]) == (
        ["alias.moved"], URL + "/v2", ["north"], "bot")
    assert client.patch(f"/webhooks/{made['id']}", json={"models": None}, headers=admin).json()["models"] is None
    for body, named in (({"url": "mailto:x@example.com"}, "body.url"), ({"events": []}, "body.events"),
                        ({"models": ["south"]}, "models: no model named 'south'"), ({"secret": "x" * 20}, "body.secret"),
                        ({"url": None}, "url: required")):
        r = client.patch(f"/webhooks/{made['id']}", json=body, headers=admin)
        assert r.status_code == 422 and named in r.json()["detail"], (body, r.text)
    assert client.patch(f"/webhooks/{made['id']}", json={}, headers=admin).status_code == 200  # changes nothing
    audit = [(e["action"], e["target"], e["detail"]) for e in reversed(client.get("/audit", headers=admin).json())
             if e["action"].startswith("webhook.")]
    assert audit == [
        ("webhook.create", f"webhook {made['id']}", {"url": URL, "events": ["*"], "models": ["north"],
                                                     "description": "bot", "enabled": True}),
        ("webhook.update", f"webhook {made['id']}", {"url": {"from": URL, "to": URL + "/v2"},
                                                     "events": {"from": ["*"], "to": ["alias.moved"]}}),
        ("webhook.update", f"webhook {made['id']}", {"models": {"from": ["north"], "to": None}})]
    assert "secret" not in str(audit)


def test_disabled_by_request_then_enabled_again(client, admin):
    made = create(client, admin)
    off = client.patch(f"/webhooks/{made['id']}", json={"enabled": False}, headers=admin).json()
    assert (off["enabled"], off["disabled_reason"]) == (False, "disabled by request") and off["disabled_at"]
    r = client.post(f"/webhooks/{made['id']}/ping", headers=admin)
    assert r.status_code == 409 and "is disabled (disabled by request): enable it first" in r.json()["detail"]
    on = client.patch(f"/webhooks/{made['id']}", json={"enabled": True}, headers=admin).json()
    assert (on["enabled"], on["disabled_reason"], on["disabled_at"], on["consecutive_failures"]) == (True, None, None, 0)


def test_a_ping_is_queued_and_shown_in_the_delivery_log(client, admin):
    made = create(client, admin, events=["task.failed"])  # a ping goes whatever it subscribes to
    r = client.post(f"/webhooks/{made['id']}/ping", headers=admin)
    assert r.status_code == 202, r.text
    ping = r.json()
    assert (ping["event"], ping["status"], ping["attempts"], ping["last_status_code"]) == ("ping", "pending", 0, None)
    assert ping["payload"] == {"id": ping["event_id"], "event": "ping", "created_at": ping["payload"]["created_at"],
                               "model": None, "data": {"webhook_id": made["id"]}}
    assert ping["next_attempt_at"] is not None
    assert log(client, admin, made["id"]) == [ping]


def test_the_delivery_log_is_newest_first_filtered_and_paged(client, admin):
    made, other = create(client, admin), create(client, admin)
    ids = [client.post(f"/webhooks/{made['id']}/ping", headers=admin).json()["id"] for _ in range(5)]
    client.post(f"/webhooks/{other['id']}/ping", headers=admin)  # another subscription's log
    assert [d["id"] for d in log(client, admin, made["id"])] == ids[::-1]
    page = log(client, admin, made["id"], limit=2)
    assert [d["id"] for d in page] == ids[:2:-1]
    assert [d["id"] for d in log(client, admin, made["id"], limit=2, before_id=page[-1]["id"])] == ids[2:0:-1]
    assert log(client, admin, made["id"], status="delivered") == []
    assert len(log(client, admin, made["id"], status="pending")) == 5
    for query, named in (({"status": "lost"}, "query.status"), ({"limit": 0}, "query.limit"),
                         ({"limit": 1001}, "query.limit"), ({"before_id": -1}, "query.before_id")):
        r = client.get(f"/webhooks/{made['id']}/deliveries", params=query, headers=admin)
        assert r.status_code == 422 and r.json()["detail"].startswith(named), (query, r.text)


def test_deleting_a_subscription_deletes_its_log(client, admin):
    made = create(client, admin)
    client.post(f"/webhooks/{made['id']}/ping", headers=admin)
    assert client.delete(f"/webhooks/{made['id']}", headers=admin).status_code == 204
    assert client.get(f"/webhooks/{made['id']}", headers=admin).status_code == 404
    assert client.delete(f"/webhooks/{made['id']}", headers=admin).status_code == 404
    again = create(client, admin)
    assert again["id"] > made["id"], "an id is never given again"
    assert log(client, admin, again["id"]) == []
    deleted = [e for e in client.get("/audit", params={"action": "webhook.delete"}, headers=admin).json()]
    assert [(e["target"], e["detail"]) for e in deleted] == [(f"webhook {made['id']}", {"url": URL})]


def test_a_tasks_life_and_the_aliases_it_moves_queue_their_events(client, admin):
    """Registered through the API, finished as a worker records it (tests/api/test_models.finish),
    then production moved by a person and a queued task cancelled: each change its event, in order,
    only for the models the subscription names."""
    new_model(client, admin, "north")
    new_model(client, admin, "south")
    everything = create(client, admin)["id"]
    north_only = create(client, admin, models=["north"], events=["alias.moved", "task.cancelled"])["id"]
    first = register(client, admin, "north", ["car"])["id"]
    assert finish(client, first) == 1
    second = register(client, admin, "north", ["bus"])["id"]
    assert finish(client, second) == 2
    assert client.put("/models/north/aliases/production", json={"version": 1}, headers=admin).status_code == 200
    assert client.put("/models/north/aliases/production", json={"version": 1}, headers=admin).status_code == 200
    queued = register(client, admin, "north", ["van"])["id"]
    assert client.post(f"/tasks/{queued}/cancel", headers=admin).status_code == 200
    register(client, admin, "south", ["car"])

    every = [(d["event"], d["payload"]["model"], d["payload"]["data"]) for d in log(client, admin, everything)[::-1]]
    assert [(e, m, data.get("id") or data.get("version") or data.get("alias")) for e, m, data in every] == [
        ("task.queued", "north", first), ("task.started", "north", first),
        ("version.recorded", "north", 1), ("alias.moved", "north", "latest"), ("alias.moved", "north", "production"),
        ("task.succeeded", "north", first),
        ("task.queued", "north", second), ("task.started", "north", second),
        ("version.recorded", "north", 2), ("alias.moved", "north", "latest"), ("alias.moved", "north", "production"),
        ("task.succeeded", "north", second),
        ("alias.moved", "north", "production"),  # a person's rollback; moving it there again is no move
        ("task.queued", "north", queued), ("task.cancelled", "north", queued),
        ("task.queued", "south", every[-1][2]["id"])]
    succeeded = every[5][2]
    assert (succeeded["status"], succeeded["model_version"], succeeded["parent_version"], succeeded["error"]) == (
        "succeeded", 1, None, None)
    assert every[8][2]["parent"] == 1 and every[8][2]["promoted"] is True
    assert every[10][2] == {"alias": "production", "from": 1, "to": 2, "automatic": True}
    assert every[12][2] == {"alias": "production", "from": 2, "to": 1, "automatic": False}
    assert [(d["event"], d["payload"]["data"].get("alias")) for d in log(client, admin, north_only)[::-1]] == [
        ("alias.moved", "latest"), ("alias.moved", "production"), ("alias.moved", "latest"),
        ("alias.moved", "production"), ("alias.moved", "production"), ("task.cancelled", None)]
