"""Servers a fault test may stop and start: a Redis and a PostgreSQL of the test's own, on spare
ports, so stopping them never disturbs the shared servers other tests (and CI) use."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def empty_postgres(url: str) -> None:
    """Empty a test database's ``public`` schema. Connections left by an earlier test (a pool a
    finished app did not close, a housekeeping thread mid-query) are ended first: one holding a lock
    on a table would make the DROP wait on it, or deadlock with it."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def wait_for_port(port: int, *, up: bool, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} did not go {'up' if up else 'down'} within {timeout_s} s")


class RedisServer:
    """``redis-server`` on a spare port, in memory only."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # as if the server died: no clean shutdown
            self.proc.wait()
            self.proc = None
        wait_for_port(self.port, up=False)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found or not found[-1]:
        raise FileNotFoundError(f"PostgreSQL's {name} is not installed")
    return found[-1]


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb) on a spare port, trust auth, database ``strata``.

    As root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: as root that is mode 0700, and the server runs as postgres.
        self.workdir = Path(tempfile.mkdtemp(prefix="strata-test-pg-"))
        self.datadir = self.workdir / "pgdata"
        self.as_user: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/strata"

    def init(self) -> None:
        self.datadir.mkdir(parents=True)
        if self.as_user:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(self.datadir, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "strata")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir), "-o", options, "-l", str(self.datadir / "log"),
                  "-w", "start")

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        # immediate: like a crash, open connections are cut without goodbye
        self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        wait_for_port(self.port, up=False)

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       cwd="/tmp")


class FlakyProxy:
    """A TCP proxy to ``upstream_port`` that can die: at once (``down``), or mid-traffic once it has
    forwarded ``fail_after_bytes`` more bytes upstream (``arm``); ``up`` brings it back on the same
    port. Put in front of the S3 endpoint, it is an object store that dies in the middle of an upload."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._budget: int | None = None
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener, self._budget = listener, None
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        for s in ([listener] if listener else []) + conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def arm(self, fail_after_bytes: int) -> None:
        self._budget = fail_after_bytes

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                if counted and self._budget is not None:
                    self._budget -= len(data)
                    if self._budget <= 0:
                        self.down()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


class ApiProcess:
    """The API as ``strata run`` starts it (services.cli.processes.api_command: uvicorn, our HTTP
    protocol, real sockets), on a spare port; its log in ``log``. A context manager."""

    def __init__(self, settings, log: Path, **overrides) -> None:
        self.settings = settings.model_copy(update={"port": free_port(), **overrides})
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def port(self) -> int:
        return self.settings.port

    def __enter__(self) -> ApiProcess:
        import httpx

        from services.cli.processes import api_command
        from services.config import settings_env

        env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}, **settings_env(self.settings)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(api_command(self.settings), env=env, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=Path(__file__).resolve().parents[1], start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) of the API process, in KiB."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
        return fields


@contextlib.contextmanager
def worker_running(settings, log: Path) -> Iterator[subprocess.Popen]:
    """A real Celery worker process on ``settings`` (its broker, queue and database), its output in
    ``log``; stopped as a whole process group (a Celery parent killed alone would leave its pool
    child behind), the log's tail printed (pytest shows it when a test fails)."""
    from services.cli.processes import worker_command
    from services.config import settings_env

    env = {**os.environ, **settings_env(settings)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(worker_command(settings), env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        print(log.read_text(errors="replace")[-4000:])
