"""One training run on several processes: DistributedDataParallel, one process (rank) per GPU.

``train_distributed`` runs ``trainer.train`` as rank 0 in the calling process (which keeps the
hooks: progress, cancel checks, checkpoint upload) and starts ranks 1..N-1 as subprocesses of
``python -m services.learning.distributed``. Subprocesses, not ``multiprocessing``: a Celery
prefork child is daemonic and may not have multiprocessing children. What the other ranks need
(model, teacher, method, dataset, config) travels in a file written with ``torch.save``.

What each rank does (``Group`` is what the trainer knows of it):
- trains on its share of every global batch (``services.learning.sampling.EpochSampler`` with its
  rank): per-rank batch = batch_size / N, so the global batch, the steps and the poly schedule are
  a single process's; DDP averages the gradients;
- passes over the whole set where a single process does (class weights, the teacher's
  calibration): every rank computes the same values, no exchange needed;
- rank 0 alone writes the epoch checkpoint (with every rank's RNG state, gathered), reports
  progress, and runs precise-BN recalibration after training, over the same batches as one process.
- a cancel seen by rank 0 is shared (all-reduce of a flag) and every rank stops at the same step.

BatchNorm: while training, the layers are synchronised (statistics over the global batch, as one
process has them): torch's SyncBatchNorm on CUDA, ``CpuSyncBatchNorm`` on the CPU (torch's refuses
CPU tensors); they are turned back into BatchNorm after. What is left of the difference from one
process is the order of float sums (docs/operations.md gives the measured tolerance).

Failures: a rank that dies breaks the others' next collective (gloo: at once; NCCL: after
``timeout_s``); rank 0 then raises ``DistributedTrainingError`` naming the rank, its exit status
and the end of its log. Ranks 1..N-1 exit when rank 0's process is gone, and rank 0 ends them
when it leaves ``train_distributed`` for any reason. The last epoch checkpoint resumes the run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from services.learning.checkpoint import capture_rng_state
from services.learning.config import TrainConfig
from services.learning.methods import Method
from services.learning.zoo import SegModel

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 1800.0  # longest wait in a collective: covers rank 0 uploading a big checkpoint
_READY = "strata/ready/{}"
_LOG_TAIL = 2000  # characters of a failed rank's log quoted in the error
_GRACE_S = 10.0  # how long ranks get to exit on their own before they are killed
EXIT_STOPPED = 3  # a rank's exit status when the run was cancelled or diverged (as rank 0 did)


class DistributedTrainingError(RuntimeError):
    """A rank other than 0 failed (or never started); the message names it and quotes its log."""


@dataclass(frozen=True)
class Group:
    """This process's place in the run, as the trainer needs it."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def per_rank_batch(self, batch_size: int) -> int:
        """This rank's share of the global ``batch_size``; refused unless it divides evenly."""
        if batch_size % self.world_size:
            raise ValueError(
                f"batch_size {batch_size} cannot be split evenly over {self.world_size} GPUs per task "
                f"(STRATA_GPUS_PER_TASK): use a multiple of {self.world_size}"
            )
        return batch_size // self.world_size

    def device(self, device: torch.device) -> torch.device:
        """CUDA: GPU ``rank`` of those the process may see; CPU stays CPU."""
        if device.type != "cuda":
            return device
        if device.index not in (None, 0):
            raise ValueError(f"a task on {self.world_size} GPUs uses cuda:0..{self.world_size - 1} of the devices "
                             f"it may see (CUDA_VISIBLE_DEVICES); device {str(device)!r} cannot be one rank's")
        if torch.cuda.device_count() < self.world_size:
            raise ValueError(f"{self.world_size} GPUs per task (STRATA_GPUS_PER_TASK) but this process sees "
                             f"{torch.cuda.device_count()} (CUDA_VISIBLE_DEVICES)")
        torch.cuda.set_device(self.rank)
        return torch.device("cuda", self.rank)

    def seed(self, seed: int) -> int:
        """The seed of this rank's global RNGs (rank 0: the run's). Augmentation does not draw from
        them (sampling.SeededItems seeds each item); dropout does, and must differ between ranks."""
        return seed if self.rank == 0 else seed + 1_000_003 * self.rank

    def wrap(self, model: SegModel, device: torch.device) -> nn.Module:
        """``model`` under DDP, its BatchNorm layers synchronised first; the trainer keeps using
        ``model`` itself for everything but the training forward, and calls ``unwrap`` when training
        is over."""
        _replace_batchnorm(model, sync=True, device=device)
        ids = [device.index] if device.type == "cuda" else None
        # Buffers (BatchNorm statistics) are not sent at every forward: only rank 0's are checkpointed and used.
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    def unwrap(self, model: SegModel) -> None:
        """Synchronised BatchNorm back to BatchNorm (same state): recalibration and scoring run on
        rank 0 alone."""
        _replace_batchnorm(model, sync=False)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is True on any (a collective: every rank calls it)."""
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, terms: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
        """Each loss term averaged over the ranks (a collective): the global batch's, as the ranks'
        shares are equal. Also carries a rank's non-finite loss to every rank."""
        names = sorted(terms)
        values = torch.stack([terms[k].detach().float().to(device) for k in names])
        dist.all_reduce(values)
        return dict(zip(names, values / self.world_size, strict=True))

    def gather_rng(self) -> list[dict[str, Any]] | None:
        """Every rank's RNG state, on rank 0 (None elsewhere): a collective."""
        states: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(capture_rng_state(), states, dst=0)
        return states

    def rng_from(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        """This rank's RNG state in a checkpoint: its own when the checkpoint has it (same number of
        ranks), else the main RNG state (rank 0's, or the single process's)."""
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) == self.world_size:
            return ranks[self.rank]
        return state["rng"]


def train_distributed(
    world_size: int,
    model: SegModel,
    method: Method,
    dataset: torch.utils.data.Dataset,
    config: TrainConfig,
    *,
    teacher: SegModel | None,
    class_map: Mapping[int, str],
    checkpoint_dir: Path | None = None,
    on_progress: Callable | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SegModel:
    """``trainer.train`` on ``world_size`` processes (this one is rank 0); returns rank 0's model,
    as ``train`` does. ``world_size`` 1 is a plain ``train``."""
    from services.learning.trainer import TrainingCancelled, TrainingDiverged, resolve_device, train

    if world_size == 1:
        return train(model, method, dataset, config, teacher=teacher, class_map=class_map,
                     checkpoint_dir=checkpoint_dir, on_progress=on_progress, should_cancel=should_cancel,
                     on_checkpoint=on_checkpoint)
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    Group(0, world_size).per_rank_batch(min(config.batch_size, len(dataset)))  # type: ignore[arg-type]
    backend = "nccl" if resolve_device(config.device).type == "cuda" else "gloo"
    timeout = timedelta(seconds=timeout_s)
    # Port 0: the OS picks a free port for the rendezvous store, with no window for another
    # process to take it (as probing for a free port and binding it later would have).
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, timeout=timeout, wait_for_workers=False)
    threads = max(1, torch.get_num_threads() // world_size)  # the process's cores, shared among its ranks
    before_threads = torch.get_num_threads()
    if checkpoint_dir is not None:  # the job file then goes where the task's files are cleaned up, even after a kill
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ranks-", dir=checkpoint_dir) as work:
        job = Path(work) / "job.pt"
        torch.save({"model": model, "teacher": teacher, "method": method, "dataset": dataset, "config": config,
                    "class_map": dict(class_map), "checkpoint_dir": checkpoint_dir, "port": store.port,
                    "world_size": world_size, "backend": backend, "timeout_s": timeout_s, "threads": threads,
                    "parent": os.getpid()}, job)
        ranks = [_start_rank(job, rank, Path(work) / f"rank{rank}.log", threads) for rank in range(1, world_size)]
        try:
            _wait_ready(store, ranks, timeout_s)
            torch.set_num_threads(threads)
            dist.init_process_group(backend, store=store, rank=0, world_size=world_size, timeout=timeout)
            log.info("training on %d processes (%s), %d images per process and step", world_size, backend,
                     min(config.batch_size, len(dataset)) // world_size)  # type: ignore[arg-type]
            return train(model, method, dataset, config, teacher=teacher, class_map=class_map,
                         checkpoint_dir=checkpoint_dir, on_progress=on_progress, should_cancel=should_cancel,
                         on_checkpoint=on_checkpoint, dist=Group(0, world_size))
        except (DistributedTrainingError, TrainingCancelled, TrainingDiverged):
            raise  # every rank stopped at the same step for the same reason: rank 0's words say it
        except Exception as err:
            failed = _failed_rank(ranks, wait_s=5.0)
            if failed is not None:  # rank 0's error is the echo of another rank's death: name that one
                raise failed from err
            raise
        finally:
            torch.set_num_threads(before_threads)
            if dist.is_initialized():
                dist.destroy_process_group()
            _end_ranks(ranks)


# --- ranks 1..N-1 ---------------------------------------------------------------------------


@dataclass
class _Rank:
    rank: int
    process: subprocess.Popen
    log_path: Path

    def failure(self) -> DistributedTrainingError | None:
        code = self.process.poll()
        if code is None or code in (0, EXIT_STOPPED):
            return None
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        try:
            tail = self.log_path.read_text(errors="replace")[-_LOG_TAIL:].strip()
        except OSError:
            tail = ""
        return DistributedTrainingError(
            f"training rank {self.rank} {how}; the last epoch checkpoint (if any) resumes the run"
            + (f". Its log ends with:\n{tail}" if tail else "")
        )


def _start_rank(job: Path, rank: int, log_path: Path, threads: int) -> _Rank:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # The same imports as this process, wherever it was started from.
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with open(log_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.learning.distributed", str(job), str(rank)],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    return _Rank(rank, process, log_path)


def _wait_ready(store: dist.TCPStore, ranks: list[_Rank], timeout_s: float) -> None:
    """Until every rank has loaded the job; a rank that dies first (bad import, unreadable job)
    fails at once instead of leaving rank 0 waiting in the rendezvous."""
    keys = [_READY.format(r.rank) for r in ranks]
    deadline = time.monotonic() + timeout_s
    while not store.check(keys):
        for r in ranks:
            if (failure := r.failure()) is not None:
                raise failure
            if r.process.poll() is not None:
                raise DistributedTrainingError(f"training rank {r.rank} exited before it started")
        if time.monotonic() > deadline:
            raise DistributedTrainingError(f"training ranks did not start within {timeout_s:g} s")
        time.sleep(0.05)


def _failed_rank(ranks: list[_Rank], wait_s: float) -> DistributedTrainingError | None:
    deadline = time.monotonic() + wait_s
    while True:
        for r in ranks:
            if (failure := r.failure()) is not None:
                return failure
        if all(r.process.poll() is not None for r in ranks) or time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _end_ranks(ranks: list[_Rank]) -> None:
    deadline = time.monotonic() + _GRACE_S
    for r in ranks:
        try:
            r.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("training rank %d did not exit; killing it", r.rank)
            r.process.kill()
            r.process.wait()


def _exit_with_parent(parent: int) -> None:
    """A rank whose rank 0 is gone (killed worker) exits instead of waiting in a collective."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, name="strata-rank-parent", daemon=True).start()


def _run_rank(job_path: Path, rank: int) -> int:
    from services.learning.trainer import TrainingCancelled, TrainingDiverged, train

    job = torch.load(job_path, map_location="cpu", weights_only=False)  # written by rank 0 just now
    _exit_with_parent(job["parent"])
    torch.set_num_threads(job["threads"])
    timeout = timedelta(seconds=job["timeout_s"])
    store = dist.TCPStore("127.0.0.1", job["port"], job["world_size"], is_master=False, timeout=timeout)
    store.set(_READY.format(rank), "1")
    dist.init_process_group(job["backend"], store=store, rank=rank, world_size=job["world_size"], timeout=timeout)
    try:
        train(job["model"], job["method"], job["dataset"], job["config"], teacher=job["teacher"],
              class_map=job["class_map"], checkpoint_dir=job["checkpoint_dir"],
              dist=Group(rank, job["world_size"]))
    except (TrainingCancelled, TrainingDiverged):  # rank 0 stops too, at the same step, and says why
        return EXIT_STOPPED
    finally:
        dist.destroy_process_group()
    return 0


# --- BatchNorm ------------------------------------------------------------------------------


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """What torch's SyncBatchNorm does (statistics over every rank's share of the batch), for CPU
    tensors, which torch's refuses (and DDP refuses it on a CPU model): so that the gloo runs the
    tests make normalise as one process with the whole batch does, as NCCL runs on GPUs do."""

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(input)
        return _cpu_sync_batch_norm(self, input)


def _cpu_sync_batch_norm(layer: CpuSyncBatchNorm, x: Tensor) -> Tensor:
    """Batch statistics summed over the ranks (two passes, mean then variance, as a single
    process computes them), gradients summed back through the same sums."""
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    local = x.new_tensor([x.numel() // x.shape[1]])
    sums = _SumOverRanks.apply(torch.cat([x.sum(dims), local]))
    count = sums[-1]
    mean = sums[:-1] / count
    centred = x - mean.view(shape)
    var = _SumOverRanks.apply((centred * centred).sum(dims)) / count
    if layer.track_running_stats:
        with torch.no_grad():
            layer.num_batches_tracked.add_(1)
            factor = 1.0 / float(layer.num_batches_tracked) if layer.momentum is None else layer.momentum
            layer.running_mean.lerp_(mean.detach(), factor)
            layer.running_var.lerp_(var.detach() * count / (count - 1), factor)  # unbiased, as BatchNorm keeps it
    out = centred * torch.rsqrt(var + layer.eps).view(shape)
    if layer.affine:
        out = out * layer.weight.view(shape) + layer.bias.view(shape)
    return out


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the sum of every rank's gradient (each rank's loss
    depends on every rank's input through the shared statistics)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


_SYNCED = (nn.SyncBatchNorm, CpuSyncBatchNorm)


def _replace_batchnorm(module: nn.Module, *, sync: bool, device: torch.device | None = None) -> None:
    """Swap BatchNorm layers for synchronised ones (``sync``: torch's SyncBatchNorm on CUDA, else
    CpuSyncBatchNorm) or back, in place, keeping parameters, buffers and training mode (and so the
    state dict)."""
    synced = nn.SyncBatchNorm if device is not None and device.type == "cuda" else CpuSyncBatchNorm
    for name, child in module.named_children():
        if sync and isinstance(child, _BatchNorm) and not isinstance(child, _SYNCED):
            new: nn.Module = synced(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
        elif not sync and isinstance(child, _SYNCED):
            new = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
        else:
            _replace_batchnorm(child, sync=sync, device=device)
            continue
        if child.affine:
            new.weight, new.bias = child.weight, child.bias
        new.running_mean, new.running_var = child.running_mean, child.running_var
        new.num_batches_tracked = child.num_batches_tracked
        new.train(child.training)
        setattr(module, name, new)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=f"rank {sys.argv[2]} %(levelname)s %(name)s: %(message)s")
    sys.exit(_run_rank(Path(sys.argv[1]), int(sys.argv[2])))
