"""The client commands against a real server: the API as `strata run` starts it (uvicorn, real
sockets), a real Celery worker process that trains, and the `strata` command run as a user runs it
(a subprocess for the demo and for Ctrl-C; in this process for the rest, to read its output)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from services.auth import create_key
from services.cli.main import main
from services.client import ApiError, ServerUnreachable, Strata
from services.data.synthetic import write_shapes_dataset
from services.db.session import make_engine, make_session_factory, session_scope
from tests.servers import ApiProcess, FlakyProxy

ROOT = Path(__file__).resolve().parents[3]
SERVER = pytest.mark.parametrize("settings", ["server"], indirect=True)  # Postgres, Redis, S3: as in production
QUICK = ["--epochs", "2", "--image-size", "32", "--batch-size", "4", "--no-pretrained"]


def new_key(settings, *scopes: str) -> str:
    engine = make_engine(settings)
    with session_scope(make_session_factory(engine)) as s:
        _, plaintext = create_key(s, f"cli test {' '.join(scopes)}", scopes)
    engine.dispose()
    return plaintext


@pytest.fixture
def api(prepared, tmp_path):
    with ApiProcess(prepared, tmp_path / "api.log") as running:
        yield running


@pytest.fixture
def strata(api, prepared, monkeypatch, capsys):
    """``strata ARGS`` in this process against the API with an admin key: (exit code, stdout, stderr)."""
    monkeypatch.setenv("STRATA_URL", api.url)
    monkeypatch.setenv("STRATA_API_KEY", new_key(prepared, "admin"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(prepared.data_dir / "no-config"))

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's own refusals
            code = exit.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def shapes(tmp_path: Path, name: str, count: int = 8) -> Path:
    """images/ + masks/ of ``count`` 32 px images showing square (1) and disc (2)."""
    root = write_shapes_dataset(tmp_path / name, {"train": count}, size=32, num_shapes=2)
    return root / "train"


def cli_process(api, key: str, *args: str, **kw) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRATA_")},
           "STRATA_URL": api.url, "STRATA_API_KEY": key}
    return subprocess.Popen([sys.executable, "-m", "services.cli.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible, **kw)


def _interruptible() -> None:
    """SIGINT back to its default in the child, as a terminal's foreground process has it: a test
    suite started in the background of a script (`cmd &`) ignores SIGINT, the ignore is inherited,
    and Python then installs no KeyboardInterrupt handler, so Ctrl-C could not be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@SERVER
@pytest.mark.slow
def test_the_demo_then_every_command_on_its_model(api, worker_process, prepared, strata, tmp_path):
    key = new_key(prepared, "admin")
    demo = cli_process(api, key, "demo", "--images", "12", "--size", "48", "--epochs", "2", "--json")
    out, err = demo.communicate(timeout=600)
    assert demo.returncode == 0, err
    result = json.loads(out)
    assert result["model"] == "demo" and len(result["tasks"]) == 2
    versions = {v["version"]: v for v in result["versions"]}
    assert sorted(versions) == [1, 2] and versions[2]["parent"] == 1 and versions[2]["method"] == "mib"
    assert "latest" in versions[2]["aliases"] and versions[2]["num_classes"] == 4  # background + 3 shapes
    assert {c["name"] for c in result["compare"]["classes"]} == {"background", "square", "disc", "triangle"}

    # Every command, on the demo's model: tables for people, --json for scripts. (Two epochs may forget
    # more than the promotion policy allows: version 2 is promoted by hand.)
    code, out, _ = strata("promote", "2", "--model", "demo", "--json")
    assert code == 0 and json.loads(out)["version"] == 2
    code, out, _ = strata("versions", "--model", "demo")
    assert code == 0 and "model demo" in out and "mib" in out and "latest, production" in out
    code, out, _ = strata("versions", "--model", "demo", "--json")
    assert [v["version"] for v in json.loads(out)] == [1, 2]
    code, out, _ = strata("versions", "2", "--model", "demo")
    assert code == 0 and "triangle" in out and "new" in out and "promotion:" in out
    code, out, _ = strata("compare", "1", "2", "--model", "demo")
    assert code == 0 and "version 2 against version 1" in out and "(unknown)" in out and "verdict:" in out
    rows = {c["name"]: c for c in json.loads(strata("compare", "1", "2", "-m", "demo", "--json")[1])["classes"]}
    assert rows["triangle"]["in_a"] is False and rows["square"]["delta"] == pytest.approx(
        rows["square"]["iou_b"] - rows["square"]["iou_a"])
    code, out, _ = strata("tasks", "--model", "demo", "--json")
    assert code == 0 and {t["id"] for t in json.loads(out)} == set(result["tasks"])
    code, out, _ = strata("tasks", result["tasks"][1], "--watch")  # finished: shown at once
    assert code == 0 and "succeeded" in out

    code, out, _ = strata("promote", "1", "--model", "demo")
    assert code == 0 and out.strip() == "demo: production -> version 1 (was 2)"
    code, out, _ = strata("promote", "2", "--model", "demo", "--alias", "candidate", "--json")
    assert json.loads(out) == {"alias": "candidate", "version": 2, "previous": None}

    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    code, _, err = strata("segment", str(image), "--model", "demo", "--out", str(tmp_path / "mask.png"))
    assert code == 1 and "403 this needs a key with scope 'infer'" in err  # the server's words, as they are
    infer = new_key(prepared, "infer")
    code, _, err = strata("segment", str(image), "--model", "demo", "--out", str(tmp_path / "mask.png"),
                          "--api-key", infer)
    assert code == 0 and "by demo version 1" in err, err  # production is version 1 again
    mask = Image.open(tmp_path / "mask.png")
    assert mask.mode == "P" and mask.size == (56, 40) and int(np.asarray(mask).max()) <= 2  # v1 knows 2 classes
    code, out, _ = strata("segment", str(image), "-m", "demo", "--version", "candidate", "--overlay", "--out",
                          str(tmp_path / "overlay.png"), "--json", "--api-key", infer)
    assert json.loads(out)["model_version"] == 2 and Image.open(tmp_path / "overlay.png").mode == "RGB"

    code, out, _ = strata("export", "--model", "demo", "--version", "2", "--output", str(tmp_path), "--json")
    assert code == 0, out
    exported = json.loads(out)
    data = Path(exported["path"]).read_bytes()
    assert Path(exported["path"]).name == "demo-v2.onnx" and exported["sha256"] == hashlib.sha256(data).hexdigest()
    meta = onnxruntime.InferenceSession(data).get_modelmeta().custom_metadata_map["strata"]
    assert json.loads(meta)["version"] == 2


@SERVER
@pytest.mark.slow
def test_submit_uploads_follows_training_and_ctrl_c_detaches_without_cancelling(api, worker_process, prepared,
                                                                              strata, tmp_path):
    code, out, err = strata("submit", str(shapes(tmp_path, "a")), "--model", "cars", "--create-model",
                            "--classes", "square,disc", *QUICK)
    assert code == 0, err
    assert "created model cars" in err and "queued: model cars, classes square, disc" in err
    assert out.strip() == "model cars version 1 is recorded: `strata versions 1 --model cars`"

    # A long task followed in another process; Ctrl-C leaves it running.
    key = new_key(prepared, "admin")
    follower = cli_process(api, key, "submit", str(shapes(tmp_path, "b")), "--model", "cars", "--classes", "bar,cone",
                           "--epochs", "300", "--batch-size", "4")
    client = Strata(api.url, key)
    deadline = time.monotonic() + 120
    while not [t for t in client.tasks("cars", status="running") if "bar" in t.classes]:
        assert time.monotonic() < deadline and follower.poll() is None, follower.stderr.read() if follower.poll() else ""
        time.sleep(0.5)
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=30)
    assert follower.returncode == 130, err
    running = [t for t in client.tasks("cars") if "bar" in t.classes][0]
    assert f"detached: task {running.id} keeps running" in err
    assert client.task(running.id).status == "running"
    code, out, _ = strata("tasks", "--model", "cars", "--status", "running")
    assert code == 0 and running.id in out
    code, out, _ = strata("tasks", running.id, "--cancel", "--json")  # frees the worker
    assert code == 0 and json.loads(out)["cancel_requested"] is True
    client.close()


@SERVER
def test_refusals_speak_the_interface_they_came_through(api, prepared, strata, tmp_path, monkeypatch):
    folder = shapes(tmp_path, "a", count=4)
    code, _, err = strata("submit", str(folder), "--model", "nope", "--classes", "square")
    assert code == 1 and "POST /models/nope/tasks: 404 no model named 'nope'" in err
    with Strata(api.url, new_key(prepared, "admin")) as client:
        client.create_model("m")
    # A spec field the server refuses is named with the flag that set it.
    code, _, err = strata("submit", str(folder), "--model", "m", "--classes", "square,square", "--no-wait")
    assert code == 1 and "invalid spec: classes (--classes)" in err and "repeats square" in err
    code, _, err = strata("submit", str(folder), "--model", "m", "--classes", "square", "--epochs", "0")
    assert code == 1 and "invalid spec: epochs (--epochs)" in err
    code, _, err = strata("submit", str(folder), "--model", "m", "--classes", "square", "--spec", "{bad")
    assert code == 2 and "strata: submit: --spec: not valid JSON" in err
    code, _, err = strata("submit", str(tmp_path / "none"), "--model", "m", "--classes", "square")
    assert code == 2 and "FOLDER_OR_ZIP:" in err and "does not exist" in err
    code, _, err = strata("segment", str(tmp_path / "none.png"), "--model", "m", "--out", "x.png")
    assert code == 2 and "strata: segment: IMAGE:" in err
    code, _, err = strata("versions")
    assert code == 2 and "--model: no model given" in err
    code, _, err = strata("versions", "--model", "m", "--url", "ftp://x")
    assert code == 2 and "must look like http://host:port" in err
    monkeypatch.delenv("STRATA_API_KEY")
    code, _, err = strata("tasks")
    assert code == 1 and "401" in err and "no API key: set STRATA_API_KEY or pass --api-key" in err
    code, _, err = strata("tasks", "--api-key", "strata_wrong")
    assert code == 1 and "401 invalid or revoked API key" in err
    # Nothing listens: retried, then said so, exit 2.
    code, _, err = strata("tasks", "--url", f"http://127.0.0.1:{api.port + 1 if api.port < 65535 else 1}")
    assert code == 2 and "did not answer GET /tasks" in err and "is the server running?" in err


@SERVER
def test_the_client_retries_through_an_outage_and_a_repeated_submission_is_one_task(api, prepared, tmp_path):
    key = new_key(prepared, "admin")
    proxy = FlakyProxy(api.port)  # the server, reached through a link that is down for a second
    threading.Timer(1.0, proxy.up).start()
    with Strata(proxy.url, key, backoff_s=0.3, retries=5) as client:
        assert client.models() == []  # answered once the link came back
        client.create_model("north")
        folder = shapes(tmp_path, "a", count=4)
        spec = {"classes": ["square", "disc"], "epochs": 1}
        first = client.submit("north", folder, spec, idempotency_key="retry-1")
        again = client.submit("north", folder, spec, idempotency_key="retry-1")  # a retry: the same task
        assert again.id == first.id and len(client.tasks("north")) == 1
        with pytest.raises(ApiError) as err:  # the same key for another request is refused, naming it
            client.submit("north", folder, {**spec, "epochs": 2}, idempotency_key="retry-1")
        assert err.value.status == 422 and "Idempotency-Key 'retry-1' was already used" in err.value.detail
        sizes = []
        client.submit("north", shapes(tmp_path, "b", count=4), {"classes": ["bar", "cone"]},
                      on_upload=lambda done, total: sizes.append((done, total)))
        assert sizes and sizes[-1][0] == sizes[-1][1] > 0  # the upload bar's callback saw every byte
    proxy.down()
    with Strata(proxy.url, key, backoff_s=0.05, retries=2) as client:
        with pytest.raises(ServerUnreachable, match="did not answer GET /models"):
            client.models()


@SERVER
def test_an_annotation_tools_export_folder_is_zipped_on_the_way_and_read_as_the_tool_wrote_it(api, prepared, strata,
                                                                                          tmp_path):
    import zipfile

    from tests.worker.test_import_training import cvat_zip
    from tests.worker.test_import_training import shapes as shape_samples

    folder = tmp_path / "task_7-segmentation_mask_1.1"  # CVAT's export, unzipped by a user
    with zipfile.ZipFile(io.BytesIO(cvat_zip(shape_samples(tmp_path, "s", 6, [1, 2, 3], 0)))) as zf:
        zf.extractall(folder)
    code, out, err = strata("submit", str(folder), "--model", "cvat", "--create-model", "--classes", "disc,square",
                            "--other-labels", "background", "--no-wait", "--json")
    assert code == 0, err
    task = json.loads(out)
    assert task["status"] == "queued" and task["classes"] == {"disc": 1, "square": 2}
    report = task["import_report"]
    assert report["format"] == "cvat_mask" and report["images"] == 6
    assert report["class_images"] == {"disc": 6, "square": 6}
    [issue] = report["issues"]  # the triangle, which the spec does not name, made background as asked
    assert (issue["kind"], issue["labels"], issue["count"]) == ("unknown_labels", {"triangle": 6}, 6)
