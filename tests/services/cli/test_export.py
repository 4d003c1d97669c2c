"""``strata export`` on both flavours, in this process on the prepared settings: it writes the file
(built on the first run, copied from the object store's cache on the next, as the API serves it),
says what it is doing on stderr, and refuses bad flags in their terms (exit 2)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import onnxruntime
import pytest

from services.cli.main import main
from services.config import get_settings, settings_env
from services.db.models import VersionExport
from services.db.session import make_engine, make_session_factory
from services.storage import open_store
from services.storage.keys import model_prefix
from tests.services.inference.helpers import create_model, publish

CLASSES = {0: "background", 1: "cat", 4: "dog"}
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def sessions(prepared):
    engine = make_engine(prepared)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def pets(prepared, sessions) -> int:
    """Model "pets" with version 1 in production (a real LR-ASPP network)."""
    model_id = create_model(sessions, "pets")
    publish(sessions, open_store(prepared), prepared, model_id=model_id, version=1, class_map=CLASSES, winner=2)
    return model_id


@pytest.fixture
def strata_export(prepared, monkeypatch, capsys):
    """``strata export ARGS`` in this process, on the prepared settings: (exit code, stdout, stderr)."""
    for name, value in settings_env(prepared).items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str, str]:
        get_settings.cache_clear()
        try:
            code = main(["export", "--from-database", *args])
        except SystemExit as exit:  # argparse's own refusals
            code = exit.code
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    get_settings.cache_clear()


def rows(sessions) -> list[tuple]:
    with sessions() as s:
        return [(r.version, r.format, r.sha256) for r in s.query(VersionExport).order_by(VersionExport.format)]


def test_it_writes_the_file_then_copies_it_from_the_cache(strata_export, sessions, pets, tmp_path):
    code, out, err = strata_export("--model", "pets", "--output", str(tmp_path))  # production, onnx
    assert code == 0, err
    written = tmp_path / "pets-v1.onnx"
    digest = hashlib.sha256(written.read_bytes()).hexdigest()
    assert rows(sessions) == [(1, "onnx", digest)]
    assert out.startswith(f"{written}: pets version 1 as onnx (exported), {written.stat().st_size} bytes, "
                          f"sha256 {digest}")
    assert "strata: pets version production as onnx: loading the checkpoint" in err
    assert "exporting to onnx and checking it against PyTorch" in err and "storing it" in err
    meta = json.loads(onnxruntime.InferenceSession(str(written)).get_modelmeta().custom_metadata_map["strata"])
    assert (meta["model"], meta["version"], meta["channels"]) == ("pets", 1, [0, 1, 4])

    code, out, err = strata_export("--model", "pets", "--version", "1", "--output", str(tmp_path / "again.onnx"),
                                   "--quiet")
    assert code == 0 and "(from the cache)" in out and err == ""
    assert (tmp_path / "again.onnx").read_bytes() == written.read_bytes()

    code, out, err = strata_export("--model", "pets", "--version", "latest", "--format", "triton", "--output",
                                   str(tmp_path / "repo.zip"))
    assert code == 0, err
    with zipfile.ZipFile(io.BytesIO((tmp_path / "repo.zip").read_bytes())) as archive:
        assert archive.read("pets/1/model.onnx") == written.read_bytes()
        assert "dynamic_batching" in archive.read("pets/config.pbtxt").decode()
    assert [r[1] for r in rows(sessions)] == ["onnx", "triton"]


@pytest.mark.parametrize("args, message", [
    (["--model", "nope"], "--model: no model named 'nope'"),
    (["--model", "pets", "--version", "7"], "--version: model version 7 does not exist"),
    (["--model", "pets", "--version", "candidate"], "--version: 'candidate' is neither a version number nor a set alias"),
    (["--model", "pets", "--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    (["--version", "1"], "--model: name the model"),
    (["--model", "pets", "--output", "/nonexistent/dir/x.onnx"], "--output: directory /nonexistent/dir does not exist"),
])
def test_bad_flags_are_refused_in_their_terms(strata_export, sessions, pets, args, message):
    code, out, err = strata_export(*args)
    assert code == 2 and message in err and out == ""
    assert rows(sessions) == []


@pytest.mark.parametrize("settings", ["server"], indirect=True)
def test_two_processes_exporting_at_once_leave_one_export(prepared, sessions, pets, tmp_path):
    """Two `strata export` processes (no lock in common) build the same export at once: both write
    the file, and the store and the database are left with one export that its row names."""
    env = {**os.environ, **settings_env(prepared)}
    command = [sys.executable, "-m", "services.cli.main", "export", "--from-database", "--model", "pets", "--quiet", "--output"]
    procs = [subprocess.Popen([*command, str(tmp_path / f"{i}.onnx")], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert (tmp_path / "0.onnx").read_bytes() == (tmp_path / "1.onnx").read_bytes()
    [(version, format, digest)] = rows(sessions)
    with sessions() as s:
        key = s.get(VersionExport, (pets, 1, "onnx")).key
    assert [i.key for i in open_store(prepared).list(f"{model_prefix(pets)}exports/")] == [key]
    assert hashlib.sha256((tmp_path / "0.onnx").read_bytes()).hexdigest() == digest
