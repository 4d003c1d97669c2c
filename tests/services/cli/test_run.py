"""`strata run` as a user runs it: migrations, API + worker, /readyz = 200, Ctrl-C stops both."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return None, None


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_strata_run_serves_readyz_and_stops_cleanly_on_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "STRATA_DATA_DIR": str(tmp_path / "var"), "STRATA_PORT": str(port)}
    env = {k: v for k, v in env.items() if not (k.startswith("STRATA_") and k not in
                                                 {"STRATA_DATA_DIR", "STRATA_PORT"})}
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "run"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and status != 200:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            status, body = get_json(f"http://127.0.0.1:{port}/readyz")
            time.sleep(0.5)
        assert status == 200, (body, (tmp_path / "run.log").read_text())
        kids = children_of(proc.pid)
        assert len(kids) == 2, "expected the API and the worker as children"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, (tmp_path / "run.log").read_text()
        for kid in kids:
            assert not Path(f"/proc/{kid}").exists() or "zombie" in Path(f"/proc/{kid}/status").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert (tmp_path / "var" / "strata.db").exists()
