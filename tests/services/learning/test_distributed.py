"""One step on two processes (gloo on the CPU), against one process with the same global batch;
resumption after the launching process is killed; rank 0's duties; failures of the other rank.

Tolerance (docs/operations.md, "Several GPUs per task", has the measurements): two ranks compute
one process's step up to the order of float sums, BatchNorm in training mode included (its
statistics are synchronised over the ranks), when every image has as many labelled pixels. With
class weights (class_balance > 0, the default) each rank's loss is normalised by its own share's
weights, and the step follows the mean of the ranks' losses instead of the global batch's: a
real, small difference, held to its own bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from services.learning.checkpoint import load_training_state
from services.learning.distributed import CpuSyncBatchNorm, DistributedTrainingError, Group, _replace_batchnorm
from services.learning.trainer import TrainingCancelled, TrainingDiverged
from tests.services.learning import ddp_run
from tests.services.learning.ddp_run import IMAGES, NEW, OLD, SIZE, FailsOnRank1, config, run

REPO = Path(__file__).resolve().parents[3]
EXACT = 1e-5  # max abs weight difference (measured: 7.5e-9 BatchNorm frozen, 1.8e-7 training)
STATS = 1e-4  # relative difference of BatchNorm statistics (measured: 4e-6)
LOSS = 1e-4  # relative difference of the reported losses (measured: 3e-5 at the 8th step)
WEIGHTED = 5e-3  # max abs weight difference with class weights (measured: 4.8e-4)


def weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point() and "running" not in k}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def same_stats(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """BatchNorm statistics equal within STATS relative (plus 1e-6: some means are 0 +- 1e-8)."""
    return all(torch.allclose(a[k], b[k], rtol=STATS, atol=1e-6) for k in a if "running" in k)


def test_two_ranks_train_as_one_process_with_the_same_batch() -> None:
    # An incremental step with the parent's BatchNorm statistics (nothing depends on how the
    # batch is split): the same weights up to float summation order, teacher and distillation included.
    frozen = config(batchnorm="frozen")
    one, two = weights(run(1, "mib", frozen)), weights(run(2, "mib", frozen))
    assert max_diff(one, two) < EXACT

    # BatchNorm in training mode (synchronised over the ranks), then recalibrated by rank 0.
    one, two = run(1, "ft", config()), run(2, "ft", config())
    assert max_diff(weights(one), weights(two)) < EXACT
    assert same_stats(one, two)

    weighted = config(class_balance=0.5)  # the class weights: each rank normalises by its own share's
    assert max_diff(weights(run(1, "ft", weighted)), weights(run(2, "ft", weighted))) < WEIGHTED


def test_a_killed_launch_resumes_from_its_epoch_checkpoint(tmp_path: Path) -> None:
    uninterrupted = run(2, train_config=config(epochs=3), checkpoint_dir=tmp_path / "straight")
    command = [sys.executable, "-m", "tests.services.learning.ddp_run", str(tmp_path / "ckpt"), str(tmp_path / "out.pt")]
    launch = subprocess.Popen([*command, "--step-delay", "0.2"], cwd=REPO)
    try:
        _wait_for(lambda: (tmp_path / "ckpt" / "last.pt").exists() or launch.poll() is not None, 120)
        ranks = _children(launch.pid)
        launch.send_signal(signal.SIGKILL)
        launch.wait()
    finally:
        if launch.poll() is None:
            launch.kill()
    assert not (tmp_path / "out.pt").exists(), "the run finished before it was killed"
    assert ranks, "rank 1 was not running"
    _wait_for(lambda: not any(_alive(pid) for pid in ranks), 30)  # rank 1 follows its rank 0

    done = load_training_state(tmp_path / "ckpt")["epoch"]
    assert 1 <= done < 3
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"after epoch {done}/3" in resumed.stderr  # the resumption log line
    state = torch.load(tmp_path / "out.pt")
    assert max_diff(weights(uninterrupted), weights(state)) < EXACT
    assert same_stats(uninterrupted, state)


def test_rank_0_alone_reports_and_checkpoints(tmp_path: Path) -> None:
    reports, saved = [], []
    run(2, checkpoint_dir=tmp_path, on_progress=reports.append, on_checkpoint=saved.append)
    steps = IMAGES // 4
    assert [(p.epoch, p.step) for p in reports] == [(e, s) for e in (1, 2) for s in range(1, steps + 1)]
    assert reports[-1].images_per_s > 0
    single = []  # the loss reported is the global batch's, as one process reports it
    run(1, on_progress=single.append)
    assert [p.loss for p in reports] == pytest.approx([p.loss for p in single], rel=LOSS)
    for mine, one in zip(reports, single, strict=True):
        assert mine.terms == pytest.approx(one.terms, rel=LOSS, abs=1e-6)
    assert saved == [tmp_path / "last.pt"] * 2
    state = load_training_state(tmp_path)
    assert state["epoch"] == 2 and len(state["rng_ranks"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_cancel_seen_by_rank_0_stops_both_ranks() -> None:
    calls = []
    started = time.monotonic()
    with pytest.raises(TrainingCancelled, match="epoch 1/2, step 3/4"):
        run(2, should_cancel=lambda: calls.append(1) or len(calls) > 2)
    assert time.monotonic() - started < 60


def test_a_diverging_run_stops_every_rank_with_rank_0s_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 1/2: the loss is no longer finite"):
        run(2, "ft", config(lr=1e30), checkpoint_dir=tmp_path)
    assert load_training_state(tmp_path) is None


def test_a_failing_rank_fails_the_run_with_its_error() -> None:
    data = FailsOnRank1(IMAGES, OLD + NEW, size=SIZE)
    started = time.monotonic()
    with pytest.raises(DistributedTrainingError, match=r"rank 1 exited with status 1(.|\n)*image 7 is unreadable"):
        run(2, dataset=data)
    assert time.monotonic() - started < 60  # no wait for a timeout


def test_a_killed_rank_fails_the_run_without_a_hang() -> None:
    def kill_rank_1(progress) -> None:
        if progress.step == 2:
            for pid in _children(os.getpid()):
                os.kill(pid, signal.SIGKILL)

    started = time.monotonic()
    with pytest.raises(DistributedTrainingError, match="rank 1 was killed by signal 9"):
        run(2, on_progress=kill_rank_1)
    assert time.monotonic() - started < 60


def test_a_batch_that_does_not_split_is_refused_in_the_settings_terms() -> None:
    with pytest.raises(ValueError, match=r"batch_size 6 cannot be split evenly over 4 GPUs per task \(STRATA_GPUS_PER_TASK\)"):
        run(4, train_config=config(batch_size=6))


def test_sync_batchnorm_swaps_back_to_the_same_state() -> None:
    _, model = ddp_run.models()
    model.train()
    model.backbone.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for device, synced in (("cpu", CpuSyncBatchNorm), ("cuda", torch.nn.SyncBatchNorm)):
        _replace_batchnorm(model, sync=True, device=torch.device(device))
        assert any(isinstance(m, synced) for m in model.modules())
        assert not any(isinstance(m, synced) and m.training for m in model.backbone.modules())
        _replace_batchnorm(model, sync=False)
        assert not any(isinstance(m, (synced, CpuSyncBatchNorm)) for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_rank_resumes_with_its_own_random_state() -> None:
    state = {"rng": "main", "rng_ranks": ["r0", "r1"]}
    assert Group(1, 2).rng_from(state) == "r1"
    assert Group(1, 4).rng_from(state) == "main"  # written with another number of ranks
    assert Group(0, 2).seed(7) == 7 and Group(1, 2).seed(7) != 7


def _children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.05)
