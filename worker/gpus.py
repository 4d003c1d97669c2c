"""One GPU per training process: which device a pool child may see."""

from __future__ import annotations


def device_for_child(index: int, concurrency: int, visible: str | None) -> str | None:
    """The CUDA_VISIBLE_DEVICES value for pool child ``index`` (0-based), or None to leave it.

    With one process per worker nothing changes (run one worker per GPU, or pin the worker with
    CUDA_VISIBLE_DEVICES). With ``concurrency`` N > 1, child i gets the i-th of the devices the
    worker may see (all of 0..N-1 when unset), so N children never pile onto GPU 0.
    """
    if concurrency <= 1:
        return None
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(concurrency)]
    return devices[index % len(devices)]
