"""Dynamic batching: concurrent requests share one forward pass.

``DynamicBatcher(predict_fn, max_batch, max_wait_ms)`` owns one background thread. Callers submit
single items (``await submit(item)`` from asyncio, or ``submit_future(item)`` from any thread);
the thread takes the first waiting item, adds whatever else is queued, and, when the service is
under load, waits up to ``max_wait_ms`` after taking that first item for more, never beyond
``max_batch`` items. It then calls ``predict_fn(items)`` ONCE, off the event loop, and hands each
caller its own result; an exception in ``predict_fn`` is raised to every caller of that batch.

When to wait: a request that finds the batcher idle (nothing else queued, and the previous batch
was a single request) runs at once. Waiting then could only add latency: nobody else is sending.
Under load (others are queued with it, or the previous batch had several) the wait lets a batch
fill up. It is counted from when the batcher takes the batch's first item, not from that item's
arrival: clients answered by the previous batch send their next requests during this wait, so
concurrent clients end up in one full batch instead of splitting into groups that alternate
(each forward then holds only part of the clients, at a higher cost per image).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosed(RuntimeError):
    """``submit`` on a batcher that has been closed."""


@dataclass
class _Request(Generic[T, R]):
    item: T
    future: Future = field(default_factory=Future)


_STOP = object()  # the queue's end marker: everything before it is still served


class DynamicBatcher(Generic[T, R]):
    """Groups concurrent single-item requests into calls of ``predict_fn`` on one thread.

    predict_fn: list of items -> list of results, one per item, in order.
    on_batch:   called with the size of every batch run (for metrics); its errors are logged only.
    """

    def __init__(
        self,
        predict_fn: Callable[[list[T]], Sequence[R]],
        max_batch: int,
        max_wait_ms: float,
        *,
        on_batch: Callable[[int], Any] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predict_fn, self.max_batch, self.max_wait_s = predict_fn, max_batch, max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders close() against submit(): nothing is queued after _STOP
        self._closed = False
        self._last_batch_size = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- callers ---------------------------------------------------------------------------
    def submit_future(self, item: T) -> Future:
        """Queue one item; the returned future holds its result (or the batch's exception)."""
        request = _Request(item)
        with self._lock:
            if self._closed:
                raise BatcherClosed(f"{self.name} is closed")
            self._queue.put(request)
        return request.future

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result without blocking the event loop.

        Cancelling the awaiting task cancels the request if its batch has not started yet.
        """
        return await asyncio.wrap_future(self.submit_future(item))

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; those already queued are still served, then the thread ends."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the batching thread -----------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stopping = self._collect(first)
            self._process(batch)

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """The batch that starts with ``first``, and whether the end marker was reached."""
        batch = [first]
        # Whatever is queued already joins at once.
        while len(batch) < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                return batch, True
            batch.append(request)
        if len(batch) == 1 and self._last_batch_size <= 1:
            return batch, False  # idle: nobody else is sending, waiting would only add latency
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                request = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if request is _STOP:
                return batch, True
            batch.append(request)
        return batch, False

    def _process(self, batch: list[_Request]) -> None:
        # A request whose caller gave up (cancelled) before its batch started is dropped here.
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        self._last_batch_size = len(live)
        if not live:
            return
        try:
            results = list(self.predict_fn([r.item for r in live]))
            if len(results) != len(live):
                raise RuntimeError(f"{self.name}: predict_fn returned {len(results)} results for {len(live)} inputs")
        except BaseException as err:  # every waiter of this batch gets the error, the thread lives on
            for r in live:
                r.future.set_exception(err)
            return
        finally:
            self._report(len(live))
        for r, result in zip(live, results):
            r.future.set_result(result)

    def _report(self, size: int) -> None:
        if self.on_batch is None:
            return
        try:
            self.on_batch(size)
        except Exception:  # metrics must never fail a request
            log.warning("%s: on_batch callback failed", self.name, exc_info=True)
