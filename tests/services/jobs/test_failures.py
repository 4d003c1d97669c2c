"""A failed task's error as API clients read it: type and message, no traceback, no worker paths; the
traceback goes to the worker's log."""

from __future__ import annotations

import logging
import traceback

from sqlalchemy import select

from services.db.models import DatasetItem
from services.db.session import make_engine, make_session_factory
from services.jobs.context import JobContext
from services.jobs.failures import public_error
from services.jobs.views import task_view
from services.registry.models import create_model
from services.storage import open_store
from tests.services.jobs.test_registration import register


def test_an_absolute_path_is_cut_to_its_file_name(tmp_path):
    missing = tmp_path / "cache" / "train" / "abc" / "last.pt"
    try:
        open(missing, "rb")
    except FileNotFoundError as err:
        message = f"{type(err).__name__}: {err}"
    assert str(tmp_path) in message
    assert public_error(message) == "FileNotFoundError: [Errno 2] No such file or directory: 'last.pt'"
    assert public_error("FilesystemStore('/srv/strata/var/objects') at /srv/x.py:12") == (
        "FilesystemStore('objects') at x.py:12")


def test_keys_urls_and_relative_paths_are_kept():
    message = ("no object 'models/3/datasets/ab/images/x.jpg' in S3Store('http://minio:9000', 'strata'); "
               "see ./var/cache/x and var/uploads/y, 3/4 done")
    assert public_error(message) == message


def test_a_traceback_inside_a_message_is_dropped_and_its_error_kept():
    """A DataLoader worker's error carries its child's whole traceback in the message."""
    def load():
        raise ValueError("mask value 7 is not a class of this task")

    try:
        try:
            load()
        except ValueError:
            raise KeyError("img01") from None
    except KeyError:
        child = traceback.format_exc()
    message = f"ValueError: Caught ValueError in DataLoader worker process 0.\nOriginal {child}"
    assert 'File "' in message
    assert public_error(message) == (
        "ValueError: Caught ValueError in DataLoader worker process 0.\nKeyError: 'img01'")


def test_a_failed_task_shows_no_worker_path_and_the_log_keeps_the_traceback(prepared, tmp_path, caplog):
    def lose_an_image(sessions, store, task_id: str) -> None:
        with sessions() as s:
            store.delete(s.scalars(select(DatasetItem.image_key).where(DatasetItem.task_id == task_id)).first())

    with caplog.at_level(logging.ERROR, logger="services.jobs.run"):
        outcome, view = _run_task(prepared, tmp_path, {"classes": ["cat"], "epochs": 1}, before=lose_an_image)
    assert outcome.startswith(f"task {view.id} failed")
    assert view.status == "failed" and view.error.startswith("ObjectNotFound: no object 'models/")
    assert str(prepared.data_dir) not in view.error and str(tmp_path) not in view.error
    assert "Traceback" in caplog.text and "ObjectNotFound" in caplog.text


def test_a_dependency_that_was_down_is_named_not_located():
    from services.jobs.failures import describe
    from services.storage import StorageUnavailable

    down = StorageUnavailable("downloading 'x' failed: cannot reach S3 endpoint http://10.0.0.5:9000 (bucket prod)")
    assert describe(down) == "StorageUnavailable: object store unavailable (the worker's log has the details)"
    try:
        try:
            raise down
        except StorageUnavailable as cause:
            raise RuntimeError("could not fetch the dataset") from cause
    except RuntimeError as err:
        assert describe(err) == "RuntimeError: object store unavailable (the worker's log has the details)"
    assert describe(ValueError("lr must be positive")) == "ValueError: lr must be positive"


# --- a first task on a worker that cannot download ImageNet weights ------------------------------
FIRST = {"classes": ["cat"], "epochs": 1, "architecture": "lraspp_mobilenet_v3_large", "image_size": 32,
         "batch_size": 2}  # pretrained_backbone left out: its default, true


def _run_task(settings, tmp_path, spec, before=None):
    """Register a task of a new model "m" and run it here as a worker does (``before(sessions, store,
    task_id)`` first); returns the worker's outcome line and the task as the API shows it."""
    from services.jobs.run import run_training_task  # imports torch: only these tests pay for it

    engine = make_engine(settings)
    try:
        sessions = make_session_factory(engine)
        store = open_store(settings)
        with sessions.begin() as s:
            create_model(s, "m")
        task_id = register((settings, sessions, store), tmp_path, spec, n=3).task_id
        if before is not None:
            before(sessions, store, task_id)
        outcome = run_training_task(JobContext(settings, sessions, store, "test-worker"), task_id)
        with sessions() as s:
            return outcome, task_view(s, task_id)
    finally:
        engine.dispose()


def _run_first_task(settings, tmp_path):
    return _run_task(settings, tmp_path, FIRST)[1]


def test_missing_weights_fail_the_task_saying_what_to_change_in_the_spec(prepared, tmp_path, offline_hub):
    from services.learning.zoo import imagenet_weights_file

    view = _run_first_task(prepared, tmp_path)
    assert view.status == "failed" and view.error.startswith("PretrainedWeightsUnavailable: ImageNet weights")
    # In the terms of the interface the task came through: the spec's fields and the workers' setting.
    assert imagenet_weights_file("lraspp_mobilenet_v3_large") in view.error
    for words in ("STRATA_BACKBONE_WEIGHTS_DIR", "hyperparameters.backbone_weights",
                  "hyperparameters.pretrained_backbone: false"):
        assert words in view.error
    assert "--no-pretrained" not in view.error and "--backbone-weights" not in view.error


def test_a_first_task_takes_its_weights_from_the_workers_weights_dir(prepared, tmp_path, offline_hub):
    import torch
    import torchvision

    from services.learning.zoo import imagenet_weights_file

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(torchvision.models.mobilenet_v3_large(weights=None).state_dict(),
               weights / imagenet_weights_file("lraspp_mobilenet_v3_large"))
    view = _run_first_task(prepared.model_copy(update={"backbone_weights_dir": weights}), tmp_path)
    assert view.status == "succeeded", view.error
