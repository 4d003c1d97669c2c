"""The training loop on a tiny model: resumption to the same weights, freezing, progress, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.learning.checkpoint import load_training_state
from services.learning.config import TrainConfig
from services.learning.growth import grow_classifier
from services.learning.methods import build_method
from services.learning.trainer import (
    Progress,
    TrainingCancelled,
    TrainingDiverged,
    autocast_dtype,
    build_scaler,
    resolve_device,
    train,
)
from services.learning.zoo import SegModel, build_model
from tests.services.learning.tiny import TINY_ARCH, RandomSegDataset, class_map

OLD, NEW = 3, 2  # the teacher's classes (with background), the classes the step adds
CONFIG = TrainConfig(epochs=2, batch_size=2, log_every=1, device="cpu")


@pytest.fixture(scope="module")
def teacher_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(TINY_ARCH, OLD).state_dict()


def fresh_models(teacher_state: dict[str, torch.Tensor], init_seed: int = 0) -> tuple[SegModel, SegModel]:
    """New objects each time, as a new process would build them: the teacher from its weights,
    the student grown from it with new rows drawn from ``init_seed``."""
    teacher = build_model(TINY_ARCH, OLD)
    teacher.load_state_dict(teacher_state)
    student = grow_classifier(teacher, NEW, generator=torch.Generator().manual_seed(init_seed))
    return teacher, student


def run(teacher_state, method_name="ld+le", config=CONFIG, init_seed=0, **kwargs) -> SegModel:
    teacher, student = fresh_models(teacher_state, init_seed)
    data = RandomSegDataset(4, OLD + NEW, flip=True)
    method = build_method(method_name, OLD)
    return train(student, method, data, config, teacher=teacher, class_map=class_map(OLD + NEW), **kwargs)


def cancel_after(calls: int):
    seen = []

    def should_cancel() -> bool:
        seen.append(1)
        return len(seen) > calls

    return should_cancel


def test_resumed_training_ends_with_the_same_weights(teacher_state, tmp_path: Path) -> None:
    straight = run(teacher_state, checkpoint_dir=tmp_path / "straight")

    # Interrupted at the first step of epoch 2 (2 steps per epoch), after epoch 1's checkpoint.
    with pytest.raises(TrainingCancelled, match="1 completed epoch"):
        run(teacher_state, checkpoint_dir=tmp_path / "resumed", should_cancel=cancel_after(2))
    saved = load_training_state(tmp_path / "resumed")
    assert saved is not None and saved["epoch"] == 1 and saved["class_map"] == class_map(OLD + NEW)
    # Resumed with fresh objects whose new rows start elsewhere: the checkpoint overrides them.
    reports: list[Progress] = []
    resumed = run(teacher_state, init_seed=99, checkpoint_dir=tmp_path / "resumed", on_progress=reports.append)

    assert [(p.epoch, p.step) for p in reports] == [(2, 1), (2, 2)]
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ in {different[:5]}"
    # And a finished run's checkpoint just gives the result back.
    again = run(teacher_state, checkpoint_dir=tmp_path / "resumed", should_cancel=cancel_after(0))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in a.items())


def test_resume_refuses_a_checkpoint_of_another_run(teacher_state, tmp_path: Path) -> None:
    one_epoch = TrainConfig(epochs=1, batch_size=2, device="cpu")
    run(teacher_state, config=one_epoch, checkpoint_dir=tmp_path)
    other = TrainConfig(epochs=1, batch_size=2, lr=0.1, device="cpu")
    with pytest.raises(ValueError, match=r"different run \(config.lr differ\)"):
        run(teacher_state, config=other, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different run \(method differ\)"):
        run(teacher_state, method_name="ld", config=one_epoch, checkpoint_dir=tmp_path)


def test_progress_follows_the_poly_schedule(teacher_state) -> None:
    reports: list[Progress] = []
    run(teacher_state, on_progress=reports.append)
    assert [(p.epoch, p.epochs, p.step, p.steps) for p in reports] == [(1, 2, 1, 2), (1, 2, 2, 2), (2, 2, 1, 2), (2, 2, 2, 2)]
    total = 4
    for t, p in enumerate(reports):
        assert p.lr == pytest.approx(0.01 * (1 - t / total) ** 0.9)
        assert set(p.terms) == {"ce", "ld", "le"}
        assert p.loss == pytest.approx(sum(p.terms.values()), rel=1e-5)
        assert p.images_per_s > 0


def test_frozen_encoder_does_not_move(teacher_state) -> None:
    teacher, student = fresh_models(teacher_state)
    encoder_before = {k: v.clone() for k, v in student.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in student.classifier.state_dict().items()}
    train(student, build_method("ef", OLD), RandomSegDataset(4, OLD + NEW), CONFIG, class_map=class_map(OLD + NEW))
    # Weights and BatchNorm statistics of the encoder are the previous model's, exactly.
    assert all(torch.equal(student.backbone.state_dict()[k], v) for k, v in encoder_before.items())
    assert any(not torch.equal(student.classifier.state_dict()[k], v) for k, v in head_before.items())


def test_the_teacher_stays_as_it_was(teacher_state) -> None:
    teacher, student = fresh_models(teacher_state)
    train(student, build_method("ld", OLD), RandomSegDataset(4, OLD + NEW), CONFIG, teacher=teacher,
          class_map=class_map(OLD + NEW))
    assert not teacher.training
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in teacher_state.items())


class ColourDataset(torch.utils.data.Dataset):
    """Learnable data: image i is a plain colour plus noise, and its whole mask is class i + 1."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(1)
        colours = torch.tensor([[1.5, -1.0, 0.0], [-1.0, 1.5, 0.5]]).view(2, 3, 1, 1)
        self.images = colours + 0.3 * torch.randn(2, 3, 32, 32, generator=gen)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], torch.full((32, 32), i + 1)


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_ARCH, 3)
    reports: list[Progress] = []
    config = TrainConfig(epochs=12, batch_size=2, lr=0.05, log_every=1, device="cpu")
    train(model, build_method("ft", 0), ColourDataset(), config, class_map=class_map(3), on_progress=reports.append)
    assert reports[-1].loss < 0.5 * reports[0].loss
    assert not model.training


def test_cancel_without_checkpoints(teacher_state) -> None:
    with pytest.raises(TrainingCancelled, match="before epoch 1/2, step 2/2"):
        run(teacher_state, should_cancel=cancel_after(1))


def test_bad_inputs_are_named(teacher_state) -> None:
    teacher, student = fresh_models(teacher_state)
    ld = build_method("ld", OLD)
    data = RandomSegDataset(2, OLD + NEW)
    with pytest.raises(ValueError, match="class_map must name the model's 5 channels"):
        train(student, ld, data, CONFIG, teacher=teacher, class_map=class_map(OLD))
    with pytest.raises(ValueError, match="needs the previous model as teacher"):
        train(student, ld, data, CONFIG, class_map=class_map(OLD + NEW))
    with pytest.raises(ValueError, match=r"mask labels \[5, 6\] are outside the model's classes 0..4"):
        train(student, ld, RandomSegDataset(2, OLD + NEW + 2), CONFIG, teacher=teacher, class_map=class_map(OLD + NEW))
    with pytest.raises(ValueError, match="training dataset is empty"):
        train(student, ld, RandomSegDataset(0, OLD + NEW), CONFIG, teacher=teacher, class_map=class_map(OLD + NEW))
    with pytest.raises(ValueError, match="TrainConfig.lr must be a finite number > 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="TrainConfig.device must be"):
        TrainConfig(device="tpu")


def test_cpu_runs_in_float32() -> None:
    cpu = resolve_device("cpu")
    assert autocast_dtype(cpu, amp=True) is None
    assert not build_scaler(cpu, None).is_enabled()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_a_diverging_run_stops_with_a_clear_error(teacher_state, tmp_path: Path) -> None:
    # A learning rate far too large sends the loss to inf/NaN within the first epoch.
    config = TrainConfig(epochs=2, batch_size=2, lr=1e30, device="cpu")
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 1/2: the loss is no longer finite .*lower the lea"):
        run(teacher_state, "ft", config=config, checkpoint_dir=tmp_path)
    assert load_training_state(tmp_path) is None  # no checkpoint of diverged weights to resume from
