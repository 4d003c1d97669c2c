"""Fixtures shared by the whole suite: real servers, never mocks of our own components.

Backends come in two flavours and the storage, database and worker tests run on both:
embedded (SQLite, local files, filesystem broker) and servers (Postgres on 127.0.0.1:5432,
Redis on 127.0.0.1:6379, an S3 endpoint served by moto's ThreadedMotoServer on a free port).
Outside CI a missing server skips its tests; with CI=true it fails them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port  # noqa: F401  (tests import it from here too)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def server_missing(what: str) -> None:
    """A server a test needs is not reachable: a failure in CI, a skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{what} is not reachable and CI=true: start it (see .ci/run)", pytrace=False)
    pytest.skip(f"{what} is not reachable")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False




@pytest.fixture(autouse=True)
def _clean_strata_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own settings; a developer's STRATA_* variables must not leak in."""
    for key in list(os.environ):
        if key.startswith("STRATA_"):
            monkeypatch.delenv(key)


# --- Postgres ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the local Postgres for this test session, dropped afterwards."""
    if not port_open(PG_HOST, PG_PORT):
        server_missing(f"PostgreSQL at {PG_HOST}:{PG_PORT}")
    import psycopg

    name = f"strata_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = f"host={PG_HOST} port={PG_PORT} dbname=postgres user={os.environ.get('PGUSER', 'postgres')}"
    try:
        conn = psycopg.connect(admin, autocommit=True)
    except psycopg.OperationalError:
        admin = f"host={PG_HOST} port={PG_PORT} dbname=test"
        conn = psycopg.connect(admin, autocommit=True)
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        user = conn.info.user
    yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_url() -> str:
    if not port_open(REDIS_HOST, REDIS_PORT):
        server_missing(f"Redis at {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


# --- servers of a test's own, for fault tests that stop them -------------------------------
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator:
    """A Redis of this test's own on a spare port (tests.servers.RedisServer): stop and start it freely."""
    from tests.servers import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _own_postgres_cluster() -> Iterator:
    from tests.servers import PostgresServer

    server = PostgresServer()
    try:
        server.init()
    except (OSError, subprocess.CalledProcessError) as err:
        server.remove()
        server_missing(f"a PostgreSQL cluster of the test's own ({err})")
    yield server
    server.remove()


@pytest.fixture
def own_postgres(_own_postgres_cluster):
    """A PostgreSQL of the test session's own on a spare port, running when the test starts (a test
    may stop it; it is started again afterwards), its ``strata`` database's schema emptied."""
    from tests.servers import empty_postgres, wait_for_port

    server = _own_postgres_cluster
    if not port_open("127.0.0.1", server.port):
        server.start()
    wait_for_port(server.port, up=True)
    empty_postgres(server.url)
    yield server
    if not port_open("127.0.0.1", server.port):
        server.start()


# --- S3 (moto) ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3 HTTP endpoint on a free loopback port; the minio client talks to it like MinIO."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


# --- settings for each flavour -------------------------------------------------------------
@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "var"
    d.mkdir()
    return d


@pytest.fixture
def embedded_settings(data_dir: Path):
    from services.config import load_settings

    return load_settings(data_dir=data_dir)


@pytest.fixture
def server_settings(data_dir: Path, postgres_url: str, redis_url: str, s3_endpoint: str):
    """Settings pointing at Postgres, Redis and the S3 endpoint; a bucket of its own per test.

    The Postgres database is shared by the test session, so each test starts from an empty schema.
    """
    from services.config import load_settings
    from tests.servers import empty_postgres

    empty_postgres(postgres_url)

    return load_settings(
        data_dir=data_dir,
        database_url=postgres_url,
        broker_url=redis_url,
        s3_endpoint=s3_endpoint,
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_bucket=f"strata-{uuid.uuid4().hex[:10]}",
        training_queue=f"training-{uuid.uuid4().hex[:8]}",
        # A worker on real servers trains with a loader process, started from its (daemonic) pool
        # child; the embedded flavour keeps the default.
        train_loader_workers=1,
    )


@pytest.fixture(params=["embedded", "server"])
def settings(request: pytest.FixtureRequest):
    """Run the test once on the embedded defaults and once on real servers."""
    return request.getfixturevalue(f"{request.param}_settings")


# --- no internet ---------------------------------------------------------------------------
@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and every HTTPS request sent to a closed local port: a machine that
    cannot download torchvision's weights. Returns the (absent) hub checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


# --- a prepared service: schema at head, store ready -------------------------------------
@pytest.fixture
def prepared(settings):
    """Settings (both flavours) whose database is migrated and whose object store exists."""
    from services.cli.run import prepare

    prepare(settings)
    return settings


@pytest.fixture
def sessions(prepared):
    """A session factory on the prepared database."""
    from services.db.session import make_engine, make_session_factory

    engine = make_engine(prepared)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def worker_process(prepared):
    """A real Celery worker process on the prepared settings' broker and queue."""
    from tests.servers import worker_running

    with worker_running(prepared, prepared.data_dir / "worker.log") as proc:
        yield proc


@pytest.fixture
def client(prepared):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(prepared)) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def admin_headers(client) -> dict[str, str]:
    """Authorization headers of a fresh admin key in the client's database."""
    from services.auth import create_key
    from services.db.session import session_scope

    with session_scope(client.app.state.strata.sessions) as s:
        _, plaintext = create_key(s, "test admin", ["admin"])
    return bearer(plaintext)


@pytest.fixture
def infer_headers(client) -> dict[str, str]:
    from services.auth import create_key
    from services.db.session import session_scope

    with session_scope(client.app.state.strata.sessions) as s:
        _, plaintext = create_key(s, "test infer", ["infer"])
    return bearer(plaintext)
