"""Command lines of the service's processes, and a small supervisor that runs them together.

The API and the worker are started as child processes (never imported here), so this module
stays free of FastAPI and Celery, and the parent never initialises CUDA.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from services.config import Settings


def api_command(settings: Settings) -> list[str]:
    # The protocol adds a deadline on request headers; uvicorn bounds their size.
    return [
        sys.executable, "-m", "uvicorn", "--factory", "api.main:app_from_env",
        "--host", settings.host, "--port", str(settings.port), "--log-level", settings.log_level,
        "--http", "api.http_protocol:GuardedH11Protocol",
        "--h11-max-incomplete-event-size", str(settings.max_header_bytes),
    ]


def worker_command(settings: Settings) -> list[str]:
    # One pool process per GPU (worker_concurrency); prefork children initialise CUDA themselves.
    return [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker",
        "--queues", settings.training_queue,
        "--concurrency", str(settings.worker_concurrency),
        "--loglevel", settings.log_level.upper(),
        "--hostname", "strata-training@%h",
        "--without-gossip", "--without-mingle",
    ]


def supervise(commands: dict[str, list[str]], *, grace_s: float = 30.0) -> int:
    """Run the commands until one exits or we get SIGINT/SIGTERM; then stop all cleanly.

    Children get their own session so a terminal's Ctrl-C reaches only us; we then send each one
    SIGTERM (Celery: warm shutdown, the running task is finished or left unacknowledged for
    redelivery; uvicorn: graceful) and SIGKILL whatever is still alive after ``grace_s``.
    """
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    procs = {name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in commands.items()}
    try:
        exited = None
        while stop["signal"] is None and exited is None:
            exited = next((n for n, p in procs.items() if p.poll() is not None), None)
            time.sleep(0.2)
        if exited:
            print(f"strata: {exited} exited with code {procs[exited].returncode}; stopping the rest", file=sys.stderr)
        _terminate(procs, grace_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if exited:
        return procs[exited].returncode or 1
    return 0


def _terminate(procs: dict[str, subprocess.Popen], grace_s: float) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for name, p in procs.items():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"strata: {name} did not stop within {grace_s:.0f}s; killing it", file=sys.stderr)
            p.kill()
            p.wait()
