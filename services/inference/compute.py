"""The one thread that runs every tensor operation of the serving process: ``torch_thread()``.

Why one thread: PyTorch's CPU kernels parallelise with OpenMP (libgomp), and every thread that
runs a parallel kernel gets an OpenMP team of its own that lives as long as that thread. libgomp
counts the workers of all teams; once they outnumber the cores it stops letting idle workers
spin and puts them to sleep after every parallel region, and a forward (hundreds of small
parallel regions) then pays a futex wake-up for each. Measured on the 2-core bench machine with
LR-ASPP at 256 px, batch 1 (docs/results.md, "Serving against TorchServe"): a model loaded and
warmed on one thread and run on another took 46-62 ms a forward, on the thread that had loaded it
27-35 ms. So loading a checkpoint, warming a version up, preprocessing and every forward of every
version run on this one thread, and the process keeps a single team whatever is loaded: versions
share the cores they would compete for anyway. Downloads and checksums (I/O) stay on the loader
threads; decoding and encoding images (PIL, no OpenMP) stay in the request threads.

``call(fn, *args)`` runs ``fn`` there and returns its result (or raises its exception); called
from that thread itself it runs ``fn`` at once. The thread is a daemon started on first use and
shared by everything in the process (one team per process is the point), so nothing closes it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

R = TypeVar("R")
THREAD_NAME = "strata-torch"


class TorchThread:
    def __init__(self, name: str = THREAD_NAME) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        if threading.current_thread() is self._thread:
            return fn(*args)
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future.result()

    def _run(self) -> None:
        while True:
            future, fn, args = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as err:  # the caller gets it; the thread lives on
                future.set_exception(err)
            else:
                future.set_result(result)


_lock = threading.Lock()
_shared: TorchThread | None = None


def torch_thread() -> TorchThread:
    """The process's torch thread (started on first use)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = TorchThread()
        return _shared
