"""GET /audit through the real app (both flavours): every admin action writes exactly one event
naming its key (the worker's automatic promotion names none), a refused action writes none, only
admin keys for every model read the log, and its filters and cursor page through it."""

from __future__ import annotations

import pytest

from services.auth import create_key
from services.db.session import session_scope
from services.registry.models import get_models
from tests.api.test_auth import bearer
from tests.api.test_models import finish, new_model, register, trained, upload


def key(client, name: str, scopes: list[str], models: list[str] | None = None) -> tuple[int, dict[str, str]]:
    """(id, Authorization headers) of a new key made straight in the app's database (no event)."""
    with session_scope(client.app.state.strata.sessions) as s:
        row, plaintext = create_key(s, name, scopes, None if models is None else get_models(s, models))
        return row.id, bearer(plaintext)


def audit(client, headers, **query) -> list[dict]:
    r = client.get("/audit", params=query, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def brief(events: list[dict]) -> list[tuple]:
    """(action, key id, model, target) of each event, oldest first."""
    return [(e["action"], e["key_id"], e["model"], e["target"]) for e in reversed(events)]


def test_every_admin_action_writes_one_event_naming_its_key(client):
    ops, ops_h = key(client, "ops", ["admin"])
    alice, alice_h = key(client, "alice", ["admin"])
    new_model(client, ops_h, "north")
    assert client.patch("/models/north", json={"description": "gate"}, headers=ops_h).status_code == 200
    first = register(client, ops_h, "north", ["car"])["id"]
    assert finish(client, first) == 1  # promoted by the policy: the service's event
    assert trained(client, ops_h, "north", ["bus"]) == 2
    assert client.put("/models/north/aliases/production", json={"version": 1}, headers=alice_h).status_code == 200
    assert client.put("/models/north/aliases/production", json={"version": 2}, headers=ops_h).status_code == 200
    assert client.put("/models/north/aliases/candidate", json={"version": 1}, headers=ops_h).status_code == 200
    assert client.delete("/models/north/aliases/candidate", headers=ops_h).status_code == 204
    queued = register(client, ops_h, "north", ["van"])["id"]
    assert client.post(f"/tasks/{queued}/cancel", headers=alice_h).status_code == 200
    third = trained(client, ops_h, "north", ["van"], ious={"car": 0.0})  # forgets car: held back, no event
    assert client.delete(f"/models/north/versions/{third}", headers=ops_h).status_code == 204
    made = client.post("/keys", json={"name": "cam", "scopes": ["infer"], "models": ["north"]}, headers=ops_h).json()
    assert client.delete(f"/keys/{made['id']}", headers=ops_h).status_code == 200
    assert client.delete(f"/keys/{made['id']}", headers=ops_h).status_code == 200  # again: nothing changes
    assert client.delete("/models/north?confirm=north", headers=alice_h).status_code == 204

    events = audit(client, ops_h)
    tasks = [e["target"] for e in events if e["action"] == "task.create"][::-1]
    assert brief(events) == [
        ("model.create", ops, "north", "model north"),
        ("model.update", ops, "north", "model north"),
        ("task.create", ops, "north", f"task {first}"),
        ("version.promote", None, "north", "version 1"),
        ("task.create", ops, "north", tasks[1]),
        ("version.promote", None, "north", "version 2"),
        ("version.rollback", alice, "north", "version 1"),
        ("version.promote", ops, "north", "version 2"),
        ("alias.set", ops, "north", "alias candidate"),
        ("alias.delete", ops, "north", "alias candidate"),
        ("task.create", ops, "north", f"task {queued}"),
        ("task.cancel", alice, "north", f"task {queued}"),
        ("task.create", ops, "north", tasks[3]),
        ("version.delete", ops, "north", f"version {third}"),
        ("key.create", ops, None, f"key {made['id']}"),
        ("key.revoke", ops, None, f"key {made['id']}"),
        ("model.delete", alice, "north", "model north"),
    ]
    by_action = {e["action"]: e for e in reversed(events)}  # the newest of each
    assert by_action["model.update"]["detail"] == {"description": {"from": "", "to": "gate"}}
    assert by_action["version.rollback"]["detail"] == {"from": 2, "to": 1}
    assert (by_action["version.rollback"]["key_name"], by_action["version.rollback"]["key_prefix"]) == (
        "alice", bearer_prefix(alice_h))
    assert by_action["version.promote"]["detail"] == {"from": 1, "to": 2}
    automatic = [e for e in events if e["action"] == "version.promote" and e["key_id"] is None]
    assert [e["detail"] for e in automatic[::-1]] == [
        {"from": None, "to": 1, "automatic": True, "task": first},
        {"from": 1, "to": 2, "automatic": True, "task": tasks[1].removeprefix("task ")}]
    assert all(e["key_name"] is None and e["key_prefix"] is None for e in automatic)
    assert by_action["alias.set"]["detail"] == {"from": None, "to": 1}
    assert by_action["task.cancel"]["detail"] == {"was": "queued"}
    assert by_action["task.create"]["detail"] == {"classes": ["van"], "method": "mib", "items": 3, "format": "masks"}
    assert by_action["key.create"]["detail"] == {"name": "cam", "prefix": made["prefix"], "scopes": ["infer"],
                                                 "models": ["north"]}
    assert all(e["at"].endswith(("Z", "+00:00")) for e in events)


def bearer_prefix(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")[:12]


def test_a_refused_action_writes_no_event(client):
    ops, ops_h = key(client, "ops", ["admin"])
    for other in client.get("/keys", headers=ops_h).json():  # the keys of the first start: ops is the last admin
        if other["id"] != ops:
            assert client.delete(f"/keys/{other['id']}", headers=ops_h).status_code == 200
    _, reader = key(client, "reader", ["infer"])
    new_model(client, ops_h, "m")
    task = register(client, ops_h, "m", ["car"])["id"]
    assert finish(client, task) == 1
    before = audit(client, ops_h)
    refused = [
        client.delete(f"/keys/{ops}", headers=ops_h),  # the last admin key
        client.put("/models/m/aliases/production", json={"version": 7}, headers=ops_h),
        client.put("/models/m/aliases/latest", json={"version": 1}, headers=ops_h),
        client.put("/models/m/aliases/production", json={"version": 1}, headers=reader),
        client.delete("/models/m/aliases/production", headers=ops_h),
        client.delete("/models/m/versions/1", headers=ops_h),  # production
        client.delete("/models/m", headers=ops_h),  # it has a version: confirm
        client.post("/models", json={"name": "m"}, headers=ops_h),  # taken
        client.patch("/models/m", json={"promote_max_old_miou_drop": 101}, headers=ops_h),
        client.post(f"/tasks/{task}/cancel", headers=ops_h),  # finished
        client.post("/models/m/tasks", data={"spec": '{"classes": ["car"]}'}, files=upload(1),
                    headers=ops_h),  # car exists
        client.post("/keys", json={"name": "x", "scopes": ["admin"], "models": ["nope"]}, headers=ops_h),
    ]
    assert [r.status_code for r in refused] == [409, 404, 409, 403, 409, 409, 409, 409, 422, 409, 409, 404]
    assert audit(client, ops_h) == before


def test_only_admin_keys_for_every_model_read_the_log(client):
    _, admin = key(client, "ops", ["admin", "infer"])
    new_model(client, admin, "m")
    for scopes, models in ((["read"], None), (["infer"], None), (["admin"], ["m"])):
        _, headers = key(client, "k", scopes, models)
        r = client.get("/audit", headers=headers)
        assert r.status_code == 403, r.text
    assert client.get("/audit").status_code == 401
    assert len(audit(client, admin)) == 1
    assert any(t["name"] == "audit" for t in client.get("/openapi.json").json()["tags"])


def test_filters_and_paging(client):
    ops, ops_h = key(client, "ops", ["admin"])
    alice, alice_h = key(client, "alice", ["admin"])
    for name, headers in (("a", ops_h), ("b", alice_h), ("c", ops_h)):
        new_model(client, headers, name)
        assert client.patch(f"/models/{name}", json={"auto_promote": False}, headers=headers).status_code == 200
    every = audit(client, ops_h)
    assert brief(every) == [("model.create", ops, "a", "model a"), ("model.update", ops, "a", "model a"),
                            ("model.create", alice, "b", "model b"), ("model.update", alice, "b", "model b"),
                            ("model.create", ops, "c", "model c"), ("model.update", ops, "c", "model c")]
    assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)
    assert brief(audit(client, ops_h, model="b")) == brief(every)[2:4]
    assert brief(audit(client, ops_h, key_id=alice)) == brief(every)[2:4]
    assert [e["model"] for e in audit(client, ops_h, action="model.update", key_id=ops)] == ["c", "a"]
    assert audit(client, ops_h, model="nope") == [] and audit(client, ops_h, key_id=999) == []
    pages, before = [], None
    while page := audit(client, ops_h, limit=4, **({"before_id": before} if before else {})):
        pages.append(page)
        before = page[-1]["id"]
    assert [len(p) for p in pages] == [4, 2] and sum(pages, []) == every


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "before_id=0", f"before_id={2**31}", "key_id=0",
                                   f"key_id={2**31}", "action=model.rename", "model=a%20b", "before_id=x"])
def test_bad_query_values_are_422(client, query):
    _, admin = key(client, "ops", ["admin"])
    r = client.get(f"/audit?{query}", headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("query."), r.text
