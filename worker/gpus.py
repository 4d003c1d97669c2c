"""Which GPUs a pool child may see: one per training process, or ``per_task`` of them when a task
trains on several (STRATA_GPUS_PER_TASK, services.learning.distributed)."""

from __future__ import annotations


def device_for_child(index: int, concurrency: int, visible: str | None, per_task: int = 1) -> str | None:
    """The CUDA_VISIBLE_DEVICES value for pool child ``index`` (0-based), or None to leave it.

    With one process per worker nothing changes (run one worker per GPU or per ``per_task`` GPUs,
    or pin the worker with CUDA_VISIBLE_DEVICES). With ``concurrency`` N > 1, child i gets the i-th
    group of ``per_task`` devices the worker may see (all of 0..N x per_task - 1 when unset), so N
    children never pile onto the same GPUs; its ranks then use its devices 0..per_task-1.
    """
    if concurrency <= 1:
        return None
    devices = ([d.strip() for d in visible.split(",") if d.strip()] if visible
               else [str(i) for i in range(concurrency * per_task)])
    return ",".join(devices[(index * per_task + i) % len(devices)] for i in range(per_task))
