"""``strata verify`` on both flavours: a deployment holding a model with a version and its dataset, a
second task queued with its training state in the store; then one thing broken at a time, as a bad
restore would break it. Versions are recorded without training: nothing here loads a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.cli.main import main
from services.config import get_settings, settings_env
from services.db.models import DatasetItem, ExportFormat, ModelVersion, Task, TaskStatus
from services.db.session import make_engine, make_session_factory, session_scope
from services.jobs.lifecycle import request_cancel
from services.jobs.staging import stage
from services.registry.aliases import promote
from services.registry.exports import record_export
from services.registry.models import create_model
from services.registry.verify import MISSING, ORPHAN, SHA256_MISMATCH, SIZE_MISMATCH, verify
from services.storage import FilesystemStore, open_store
from services.storage.keys import checkpoint_key, dataset_prefix, export_key, training_state_key
from tests.services.jobs.test_registration import register

CHECKPOINT = bytes(range(256)) * 40  # stands in for a model file: nothing here loads it


class Deployment:
    """A model "north" with version 1 (checkpoint and dataset of its task) and a queued second task
    whose training state is in the store, as a worker leaves it between epochs."""

    def __init__(self, settings, tmp_path: Path) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessions = make_session_factory(self.engine)
        self.store = open_store(settings)
        with session_scope(self.sessions) as s:
            self.model_id = create_model(s, "north").id
        env = (settings, self.sessions, self.store)
        self.first = register(env, tmp_path, {"classes": ["cat"]}, n=3, model="north").task_id
        self.checkpoint = self._record_version(self.first, 1)
        self.second = register(env, tmp_path, {"classes": ["dog"]}, n=2, model="north").task_id
        self.training_state = training_state_key(self.model_id, self.second)
        self.store.put_bytes(self.training_state, b"epoch 3 of 30")

    def _record_version(self, task_id: str, version: int) -> str:
        """What the worker records for a trained task: the checkpoint uploaded, then its row."""
        info = self.store.put_bytes(checkpoint_key(self.model_id, version, "0" * 64), CHECKPOINT)
        with session_scope(self.sessions) as s:
            s.add(ModelVersion(model_id=self.model_id, version=version, task_id=task_id, architecture="fcn_resnet50",
                               method="ft", hyperparameters={}, class_map={"0": "background", "1": "cat"},
                               num_classes=2, checkpoint_key=info.key, checkpoint_sha256=info.sha256,
                               checkpoint_bytes=info.size))
            s.flush()
            task = s.get(Task, task_id)
            task.status, task.model_version = TaskStatus.SUCCEEDED.value, version
            promote(s, self.model_id, version)
        return info.key

    def a_mask(self) -> str:
        with self.sessions() as s:
            return s.query(DatasetItem).filter_by(task_id=self.first).order_by(DatasetItem.id).first().mask_key

    def overwrite_in_place(self, key: str, data: bytes) -> None:
        """Other bytes under ``key``, as a disk or a careless copy would leave them: on the filesystem the
        file is rewritten with its inode, size and mtime kept, so the store's own sha256 record still
        describes the old bytes (verify must read them, not trust it)."""
        if isinstance(self.store, FilesystemStore):
            path = self.store.root / key
            before = os.stat(path)
            with open(path, "r+b") as f:
                f.write(data)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        else:
            self.store.put_bytes(key, data)

    def verify(self, **kw):
        return verify(self.sessions, self.store, **{"grace_s": 0, **kw})


@pytest.fixture
def deployment(prepared, tmp_path):
    d = Deployment(prepared, tmp_path)
    yield d
    d.engine.dispose()


@pytest.fixture
def strata_verify(prepared, monkeypatch, capsys):
    """``strata verify ARGS`` in this process, on the prepared settings: (exit code, stdout)."""
    for name, value in settings_env(prepared).items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str]:
        get_settings.cache_clear()
        code = main(["verify", "--no-progress", *args])
        return code, capsys.readouterr().out

    yield run
    get_settings.cache_clear()


def kinds(report) -> list[tuple[str, str]]:
    return sorted((p.kind, p.key) for p in report.problems)


def test_a_clean_deployment_passes(deployment, strata_verify):
    report = deployment.verify(deep=True)
    assert report.ok, report.problems
    # 5 items of two tasks (image + mask each), one checkpoint; the training state is expected.
    assert (report.checkpoints, report.dataset_objects, report.objects, report.training_states) == (1, 10, 12, 1)
    code, out = strata_verify()
    assert code == 0, out
    assert "checked 1 checkpoint(s) (sha256), 10 dataset object(s) (size), 0 export(s) (size), 12 object(s)" in out
    assert out.rstrip().endswith("no problems")


def test_a_missing_checkpoint_is_reported_with_its_model_and_version(deployment, strata_verify):
    deployment.store.delete(deployment.checkpoint)
    report = deployment.verify()
    assert kinds(report) == [(MISSING, deployment.checkpoint)]
    problem = report.problems[0]
    assert (problem.model, problem.version, problem.task_id) == ("north", 1, deployment.first)
    code, out = strata_verify()
    assert code == 1
    assert f"missing: model north, version 1: {deployment.checkpoint}: checkpoint of version 1" in out
    code, out = strata_verify("--json")
    body = json.loads(out)
    assert code == 1 and body["ok"] is False
    assert body["problems"] == [{"kind": MISSING, "key": deployment.checkpoint, "model": "north", "version": 1,
                                 "task_id": deployment.first, "detail": body["problems"][0]["detail"]}]


def test_a_corrupt_checkpoint_of_the_same_size_is_a_sha256_mismatch(deployment):
    deployment.overwrite_in_place(deployment.checkpoint, bytes(reversed(CHECKPOINT)))
    report = deployment.verify()
    assert kinds(report) == [(SHA256_MISMATCH, deployment.checkpoint)]
    assert "the database says" in report.problems[0].detail


def test_a_truncated_checkpoint_is_a_size_mismatch(deployment):
    deployment.store.put_bytes(deployment.checkpoint, CHECKPOINT[:100])
    assert kinds(deployment.verify()) == [(SIZE_MISMATCH, deployment.checkpoint)]


def test_a_missing_mask_is_reported_with_its_task(deployment, strata_verify):
    mask = deployment.a_mask()
    deployment.store.delete(mask)
    report = deployment.verify()
    assert kinds(report) == [(MISSING, mask)]
    assert (report.problems[0].model, report.problems[0].task_id) == ("north", deployment.first)
    code, out = strata_verify()
    assert code == 1 and f"missing: model north, task {deployment.first}: {mask}: mask of item" in out


def test_dataset_bytes_are_hashed_only_when_deep(deployment):
    mask = deployment.a_mask()
    with deployment.store.open(mask) as f:
        data = f.read()
    deployment.overwrite_in_place(mask, bytes(b ^ 0xFF for b in data))
    assert deployment.verify().ok  # sizes only
    assert kinds(deployment.verify(deep=True)) == [(SHA256_MISMATCH, mask)]


def test_a_stray_object_is_an_orphan_once_past_the_grace_period(deployment, strata_verify):
    stray = f"models/{deployment.model_id}/checkpoints/7/model-0123456789abcdef.pt"
    deployment.store.put_bytes(stray, b"left behind")
    deployment.store.put_bytes("notes.txt", b"not ours")
    report = deployment.verify()
    assert kinds(report) == [(ORPHAN, stray), (ORPHAN, "notes.txt")]
    by_key = {p.key: p for p in report.problems}
    assert (by_key[stray].model, by_key[stray].version) == ("north", 7)
    assert by_key["notes.txt"].model is None and "did not write" in by_key["notes.txt"].detail
    # Just written: perhaps an upload whose row is not committed yet.
    fresh = deployment.verify(grace_s=600)
    assert fresh.ok and fresh.recent == 2
    assert strata_verify()[0] == 0
    code, out = strata_verify("--grace", "0")
    assert code == 1 and f"orphan: model north, version 7: {stray}" in out


def test_the_objects_of_a_staged_upload_are_not_orphans(deployment):
    """An upload in flight, or a failed one the API's sweep deletes once the store takes it."""
    prefix = dataset_prefix(deployment.model_id, "f" * 32)
    deployment.store.put_bytes(f"{prefix}images/a.jpg", b"half of an upload")
    assert kinds(deployment.verify()) == [(ORPHAN, f"{prefix}images/a.jpg")]
    stage(deployment.sessions, prefix)
    report = deployment.verify()
    assert report.ok and report.staged == 1


def test_the_training_state_of_a_task_no_longer_pending_is_an_orphan(deployment):
    with session_scope(deployment.sessions) as s:
        request_cancel(s, deployment.second)
    report = deployment.verify()
    assert kinds(report) == [(ORPHAN, deployment.training_state)]
    assert report.problems[0].task_id == deployment.second and "not queued or running" in report.problems[0].detail


def test_an_unreachable_database_or_bad_arguments_exit_2(embedded_settings, monkeypatch, capsys):
    monkeypatch.setenv("STRATA_DATA_DIR", str(embedded_settings.data_dir))
    monkeypatch.setenv("STRATA_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/strata")
    get_settings.cache_clear()
    try:
        assert main(["verify", "--no-progress"]) == 2
        assert "strata:" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exited:
            main(["verify", "--grace", "-1"])
        assert exited.value.code == 2
    finally:
        get_settings.cache_clear()



def test_exports_are_owned_by_their_rows(deployment, strata_verify):
    """A version's export is checked like a dataset object (size; sha256 with --deep); one no row
    names is an orphan of its version."""
    export = deployment.store.put_bytes(export_key(deployment.model_id, 1, "onnx", "a" * 64, ".onnx"), b"an onnx file")
    with session_scope(deployment.sessions) as s:
        record_export(s, deployment.model_id, 1, ExportFormat.ONNX, key=export.key, sha256=export.sha256,
                      size=export.size, contract="strata-export/1")
    report = deployment.verify(deep=True)
    assert report.ok and (report.exports, report.objects) == (1, 13)
    assert "1 export(s) (size)" in strata_verify()[1]
    deployment.overwrite_in_place(export.key, b"an onnx fil!")
    assert deployment.verify().ok  # sizes only
    assert kinds(deployment.verify(deep=True)) == [(SHA256_MISMATCH, export.key)]
    deployment.store.delete(export.key)
    [problem] = deployment.verify().problems
    assert (problem.kind, problem.version, problem.detail) == (
        MISSING, 1, "onnx export of version 1: the database names it, the store does not have it")
    stray = export_key(deployment.model_id, 1, "torchscript", "b" * 64, ".pt")
    deployment.store.put_bytes(stray, b"left behind")
    assert [(p.kind, p.key, p.version, p.detail) for p in deployment.verify().problems if p.kind == ORPHAN] == [
        (ORPHAN, stray, 1, "an export of version 1; no row names it")]
