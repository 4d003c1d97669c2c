"""The broker (Redis) dies and comes back while the service runs: nothing is stranded.

Redis here is the test's own (tests.servers.RedisServer), so killing it disturbs no other test.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from services.auth import create_key
from services.cli.run import prepare
from services.db.models import Task
from services.db.session import session_scope
from tests.conftest import bearer
from tests.worker.test_redelivery import start_worker, stop
from tests.worker.test_training_flow import SMALL, create_model, shapes_zip, submit, wait_task

pytestmark = pytest.mark.slow


@pytest.fixture
def outage_settings(server_settings, own_redis):
    """Postgres and S3 as usual, the broker on our own Redis, and a relay pass every second."""
    settings = server_settings.model_copy(update={"broker_url": own_redis.url, "outbox_relay_s": 1.0})
    prepare(settings)
    return settings


def dispatched_at(client, task_id: str):
    with client.app.state.strata.sessions() as session:
        return session.get(Task, task_id).dispatched_at


def admin_key(client) -> dict[str, str]:
    with session_scope(client.app.state.strata.sessions) as session:
        return bearer(create_key(session, "fault test admin", ["admin"])[1])


def test_task_accepted_while_the_broker_is_down_trains_once_it_is_back(outage_settings, own_redis, tmp_path):
    """No worker restart: the outbox relay (API and worker) sends the owed message, and the next
    task of the same model, queued behind it, trains too."""
    worker = start_worker(outage_settings, tmp_path / "worker.log")
    try:
        with TestClient(create_app(outage_settings)) as client:
            h = admin_key(client)
            create_model(client, h, "shapes")
            own_redis.stop()
            started = time.monotonic()
            first = submit(client, h, {**SMALL, "classes": ["square"], "epochs": 1},
                           shapes_zip(tmp_path, [1], 8, seed=1), model="shapes")
            submit_s = time.monotonic() - started
            assert submit_s < 20, "a submission must not hang on a dead broker"
            assert first["status"] == "queued"
            assert dispatched_at(client, first["id"]) is None  # the message is owed, not lost
            started = time.monotonic()
            r = client.post("/workers/ping", headers=h)
            ping_s = time.monotonic() - started
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert r.json()["detail"].startswith("broker unavailable")
            assert str(own_redis.port) not in r.text  # says what failed, not where it lives

            own_redis.start()
            back = time.monotonic()
            second = submit(client, h, {**SMALL, "classes": ["disc"], "epochs": 1},
                            shapes_zip(tmp_path, [2], 8, seed=2), model="shapes")
            done = [wait_task(client, h, t["id"], timeout_s=240) for t in (first, second)]
            assert [t["status"] for t in done] == ["succeeded", "succeeded"], done
            print(f"broker down: POST /tasks 202 in {submit_s:.2f} s, /workers/ping 503 in {ping_s:.2f} s; "
                  f"both tasks trained {time.monotonic() - back:.1f} s after Redis was back")
            assert dispatched_at(client, first["id"]) is not None
            assert worker.poll() is None, "the worker must survive the outage"
    finally:
        stop(worker, 15)
        print((tmp_path / "worker.log").read_text(errors="replace")[-4000:])


def test_the_workers_relay_sends_what_no_api_sent(outage_settings, tmp_path):
    """A task committed with its message owed and no API process left to send it (it died right
    after the commit): the worker's own relay sends it, with no restart of anything."""
    from services.db.session import make_engine, make_session_factory
    from services.jobs.registration import IngestLimits, register_task
    from services.registry.models import create_model as create_model_row
    from services.storage import open_store
    from tests.services.jobs.test_registration import Upload

    engine = make_engine(outage_settings)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        model_id = create_model_row(s, "orphaned").id
    worker = start_worker(outage_settings, tmp_path / "worker.log")
    try:
        time.sleep(3)  # the worker is up and its start-up sweep has run: only the periodic relay is left
        up = Upload(tmp_path / "up").dataset(6, 1)
        spec = {**SMALL, "classes": ["cat"], "epochs": 1}
        task = register_task(sessions, open_store(outage_settings), model_id, up.received(spec), up.root / "work",
                             IngestLimits.from_settings(outage_settings))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with sessions() as s:
                row = s.get(Task, task.task_id)
                if row.status in ("succeeded", "failed"):
                    break
            time.sleep(0.5)
        assert (row.status, row.error) == ("succeeded", None)
        assert row.dispatched_at is not None
        assert f"relayed 1 owed training message(s): {task.task_id}" in (tmp_path / "worker.log").read_text()
    finally:
        stop(worker, 15)
        engine.dispose()
        print((tmp_path / "worker.log").read_text(errors="replace")[-4000:])
