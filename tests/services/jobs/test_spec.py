"""The resolved spec: rows written before it existed read back unchanged, and a task's training
settings are the spec's where the client set them and the engine's everywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.data.upload import UploadRejected
from services.db.models import Task
from services.jobs.spec import ResolvedSpec, TaskSpec, parse_spec
from services.learning.config import StepConfig, TrainConfig

# A task row's JSON exactly as registration wrote it before ResolvedSpec existed (a palette task
# queued behind another one, with loss weights and a seed), its field ``model`` renamed
# ``architecture`` as migration 0003 does.
OLD_ROW = {
    "classes": ["bicycle"], "method": "ld", "epochs": 12, "image_size": 256, "batch_size": 4, "val_fraction": 0.2,
    "hyperparameters": {"lr": 0.001, "lambda_d": 10.0, "seed": 7}, "architecture": "lraspp_mobilenet_v3_large",
    "mask_format": "palette", "palette": {"bicycle": [0, 128, 192], "car": [64, 0, 128]}, "also_labelled": ["car"],
    "after_task_id": "0f" * 16, "assigned_classes": {"bicycle": 3},
}


def test_a_row_written_before_the_typed_spec_reads_back_and_round_trips() -> None:
    spec = ResolvedSpec.of(Task(spec=OLD_ROW))
    assert spec.method == "ld" and spec.architecture == "lraspp_mobilenet_v3_large" and spec.after_task_id == "0f" * 16
    assert spec.assigned_classes == {"bicycle": 3} and spec.palette == {"bicycle": (0, 128, 192), "car": (64, 0, 128)}
    assert spec.hyperparameters.lr == 0.001 and spec.hyperparameters.momentum is None
    assert spec.stored() == OLD_ROW


def test_index_masks_store_no_palette_and_only_the_hyperparameters_given() -> None:
    client = parse_spec('{"classes": ["cat"], "hyperparameters": {"lambda_u": 3}}')
    resolved = {**client.model_dump(), "method": "mib", "architecture": "fcn_resnet50", "image_size": 512}
    stored = ResolvedSpec.model_validate(resolved).stored()
    assert "palette" not in stored and stored["hyperparameters"] == {"lambda_u": 3.0}
    assert stored["after_task_id"] is None and stored["assigned_classes"] == {}


def test_the_spec_defaults_are_the_engines() -> None:
    spec = TaskSpec(classes=["cat"])
    assert (spec.epochs, spec.batch_size) == (TrainConfig.epochs, TrainConfig.batch_size)


def test_training_settings_come_from_the_spec_where_given_and_from_the_engine_elsewhere() -> None:
    spec = ResolvedSpec.of(Task(spec=OLD_ROW))
    later = spec.step_config(first=False, step_index=2, train={"log_every": 5})
    assert later.train == TrainConfig(epochs=12, batch_size=4, lr=0.001, seed=7, log_every=5)
    assert later.method == "ld" and later.loss_weights == {"lambda_d": 10.0} and later.step_index == 2
    assert later.architecture == "lraspp_mobilenet_v3_large"

    first = ResolvedSpec.model_validate({**OLD_ROW, "method": "mib", "hyperparameters": {
        "lambda_u": 2.0, "pretrained_backbone": True, "backbone_weights": "/weights/resnet.pth"}})
    base = first.step_config(first=True, step_index=0, train={})
    assert base.loss_weights == {} and base.train == TrainConfig(epochs=12, batch_size=4)  # nothing to distil yet
    assert (base.pretrained_backbone, base.backbone_weights) == (True, Path("/weights/resnet.pth"))
    default = ResolvedSpec.model_validate({**OLD_ROW, "hyperparameters": {}}).step_config(first=True, step_index=0,
                                                                                          train={})
    assert default.pretrained_backbone is StepConfig.pretrained_backbone and default.backbone_weights is None


def test_a_row_written_under_earlier_rules_still_loads() -> None:
    """Rows keep loading when the client's rules change: tasks could ask for `joint` once, and a
    key a later release drops must not break the rows that have it."""
    row = {**OLD_ROW, "method": "joint", "retired_field": 1}
    spec = ResolvedSpec.of(Task(spec=row))
    assert spec.method == "joint" and spec.classes == ["bicycle"]
    with pytest.raises(UploadRejected, match="unknown method 'joint'"):
        parse_spec('{"classes": ["bicycle"], "method": "joint"}')


def test_new_methods_and_engine_settings_reach_the_step() -> None:
    spec = ResolvedSpec.model_validate({**OLD_ROW, "method": "plop", "hyperparameters": {
        "lambda_pod": 0.02, "batchnorm": "frozen", "class_balance": 0.5}})
    step = spec.step_config(first=False, step_index=1, train={})
    assert step.method == "plop" and step.loss_weights == {"lambda_pod": 0.02}
    assert (step.train.batchnorm, step.train.class_balance) == ("frozen", 0.5)
    assert ResolvedSpec.model_validate({**OLD_ROW, "method": "frozen-old"}).method == "frozen-old"
    with pytest.raises(UploadRejected, match="hyperparameters.batchnorm"):
        parse_spec('{"classes": ["cat"], "hyperparameters": {"batchnorm": "sometimes"}}')
    with pytest.raises(UploadRejected, match="hyperparameters.class_balance"):
        parse_spec('{"classes": ["cat"], "hyperparameters": {"class_balance": 2}}')


def test_the_architecture_is_named_architecture_and_model_is_refused_naming_it() -> None:
    """``model`` now names the lineage (in the URL); a client still sending the old field is told
    the new name rather than having its architecture silently ignored."""
    assert parse_spec('{"classes": ["cat"], "architecture": "fcn_resnet50"}').architecture == "fcn_resnet50"
    assert parse_spec('{"classes": ["cat"]}').architecture is None
    with pytest.raises(UploadRejected, match="`model` is now `architecture`"):
        parse_spec('{"classes": ["cat"], "model": "fcn_resnet50"}')
    with pytest.raises(UploadRejected, match="unknown architecture 'resnet9000'"):
        parse_spec('{"classes": ["cat"], "architecture": "resnet9000"}')
    stored = ResolvedSpec.model_validate({"classes": ["cat"], "method": "mib", "architecture": "fcn_resnet50",
                                           "image_size": 512}).stored()
    assert stored["architecture"] == "fcn_resnet50" and "model" not in stored


@pytest.mark.parametrize("text, message", [
    ('{"classes": ["a"], "classes": ["b"]}', "invalid spec: key 'classes' is given more than once"),
    ('{"classes": ["a"], "hyperparameters": {"seed": 1, "lr": 0.1, "seed": 2}}',
     "invalid spec: hyperparameters: key 'seed' is given more than once"),
    ('{"classes": ["a"], "extra": [{"k": 1}, {"k": 1, "k": 2}]}', "invalid spec: extra.1: key 'k' is given more than once"),
    ('{"classes": ["a"], "mask_format": "palette", "palette": {"a": [1, 2, 3], " a ": [3, 2, 1]}}',
     "invalid spec: palette: gives a more than one colour"),
    ('{"classes": ["a"], "epochs": NaN}', "invalid spec: not valid JSON (NaN is not a JSON value)"),
    ('{"classes": ["a"], "lr": Infinity}', "invalid spec: not valid JSON (Infinity is not a JSON value)"),
    ("[" * 100_000 + "]" * 100_000, "invalid spec: not valid JSON (nested too deeply)"),
    ('{"classes": ["a"], "epochs": ' + "9" * 5000 + "}", "invalid spec: not valid JSON (Exceeds the limit"),
    ('{"classes": ["a\u202eb"]}', "invalid spec: classes.0: class name 'a\\u202eb' contains U+202E (RIGHT-TO-LEFT "
                                  "OVERRIDE): control, format (bidirectional, zero-width), private-use and separator "
                                  "characters are not allowed"),
])
def test_the_spec_text_is_refused_where_json_would_guess(text: str, message: str) -> None:
    """A repeated key is not "the last one wins"; NaN and Infinity are not JSON; nesting and digits
    are bounded; every message says where."""
    with pytest.raises(UploadRejected) as err:
        parse_spec(text)
    assert str(err.value).startswith(message), str(err.value)


def test_stored_rows_keep_loading_whatever_their_names_hold() -> None:
    """The rules on names are the client's: a row written before them reads back unchanged."""
    row = {**OLD_ROW, "classes": ["bi\u200bcycle"], "assigned_classes": {"bi\u200bcycle": 3},
           "palette": {"bi\u200bcycle": [0, 128, 192], "car": [64, 0, 128]}}
    assert ResolvedSpec.of(Task(spec=row)).classes == ["bi\u200bcycle"]


def test_only_a_first_step_looks_in_the_workers_weights_dir() -> None:
    spec = ResolvedSpec.model_validate({"classes": ["cat"], "method": "mib", "architecture": "fcn_resnet50",
                                           "image_size": 512})
    first = spec.step_config(first=True, step_index=0, train={}, weights_dir=Path("/weights"))
    later = spec.step_config(first=False, step_index=1, train={}, weights_dir=Path("/weights"))
    assert first.backbone_weights_dir == Path("/weights") and first.pretrained_backbone is True
    assert later.backbone_weights_dir is None  # a later step grows its parent: no backbone is loaded


def test_the_deployments_defaults_come_from_its_settings_and_an_unknown_architecture_names_the_variable():
    from services.config import SettingsError, load_settings
    from services.jobs.spec import TaskDefaults
    from services.learning.names import DEFAULT_ARCHITECTURE, DEFAULT_IMAGE_SIZE

    assert TaskDefaults.from_settings(load_settings()) == TaskDefaults(DEFAULT_ARCHITECTURE, DEFAULT_IMAGE_SIZE)
    gpu = load_settings(default_architecture="deeplabv3_resnet101", default_image_size=512)
    assert TaskDefaults.from_settings(gpu) == TaskDefaults("deeplabv3_resnet101", 512)
    with pytest.raises(SettingsError) as err:
        TaskDefaults.from_settings(load_settings(default_architecture="resnet9000"))
    assert str(err.value).startswith("invalid configuration: STRATA_DEFAULT_ARCHITECTURE: unknown architecture "
                                     "'resnet9000'; choose one of deeplabv3_resnet101,")
