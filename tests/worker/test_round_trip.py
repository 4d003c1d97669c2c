"""API enqueues, a real Celery worker process runs the task, the result lands in the database."""

import time


def wait_for(fn, timeout_s: float = 90.0, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every_s)
    return None


def test_ping_goes_through_broker_and_worker_into_the_database(client, worker_process, admin_headers):
    r = client.post("/workers/ping", headers=admin_headers)
    assert r.status_code == 202
    token = r.json()["token"]

    answer = wait_for(lambda: (resp := client.get(f"/workers/ping/{token}", headers=admin_headers)).status_code == 200 and resp.json())
    assert answer, "no worker answered within 90 s (see the worker log printed above)"
    assert answer["answered_at"] is not None

    workers = client.get("/workers", headers=admin_headers).json()
    assert any(w["hostname"] == answer["answered_by"] for w in workers)
    assert worker_process.poll() is None, "the worker died"


def test_ping_unknown_token_is_404(client, admin_headers):
    r = client.get("/workers/ping/nope", headers=admin_headers)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
