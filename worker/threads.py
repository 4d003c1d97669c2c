"""How many CPU threads a training process may use.

torch sizes its thread pool to every core of the machine. Two training processes on one host then
run four threads on two cores, and each runs several times slower than alone (bench/bench_models.py
measured 8-10x per task on a 2-core machine); with one thread each they run side by side. The pool
size is read from OMP_NUM_THREADS when torch is first imported, which in a worker happens in the pool
child, per task, after ``worker_process_init`` has set it.
"""

from __future__ import annotations


def threads_for_child(setting: int | None, concurrency: int, cpu_count: int | None, env: str | None) -> int | None:
    """OMP_NUM_THREADS for a pool child, or None to leave it as it is.

    ``setting`` (STRATA_WORKER_THREADS) wins; else a value the operator put in OMP_NUM_THREADS stays;
    else the cores are shared among the worker's ``concurrency`` children (one child: torch's own
    default, all cores, is left alone)."""
    if setting is not None:
        return setting
    if env or concurrency <= 1:
        return None
    return max(1, (cpu_count or 1) // concurrency)
