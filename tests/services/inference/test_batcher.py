"""DynamicBatcher: concurrent submits share calls, max_batch holds, errors reach every waiter."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.inference.batcher import BatcherClosed, DynamicBatcher


class Recorder:
    """predict_fn that doubles its inputs, records batch sizes, and can hold the first call."""

    def __init__(self, hold_first: bool = False) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        self.started.set()
        self.release.wait(10)
        return [2 * x for x in items]


@pytest.fixture
def closing():
    batchers: list[DynamicBatcher] = []
    yield batchers.append
    for b in batchers:
        b.close(timeout=5)


def test_each_caller_gets_its_own_result_under_concurrency(closing):
    rec = Recorder()
    b = DynamicBatcher(rec, max_batch=8, max_wait_ms=5)
    closing(b)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda x: b.submit_future(x).result(10), range(200)))
    assert results == [2 * x for x in range(200)]
    assert sum(rec.sizes) == 200 and max(rec.sizes) <= 8


def test_requests_queued_behind_a_running_batch_share_the_next_and_max_batch_holds(closing):
    rec = Recorder(hold_first=True)
    sizes_seen: list[int] = []
    b = DynamicBatcher(rec, max_batch=4, max_wait_ms=20, on_batch=sizes_seen.append)
    closing(b)
    first = b.submit_future(0)
    assert rec.started.wait(5)
    queued = [b.submit_future(x) for x in range(1, 11)]  # arrive while the first batch runs
    rec.release.set()
    assert first.result(5) == 0 and [f.result(5) for f in queued] == [2 * x for x in range(1, 11)]
    assert rec.sizes == [1, 4, 4, 2]
    assert sizes_seen == rec.sizes


def test_a_lone_request_runs_at_once_instead_of_waiting(closing):
    b = DynamicBatcher(Recorder(), max_batch=8, max_wait_ms=2000)
    closing(b)
    started = time.monotonic()
    assert b.submit_future(21).result(5) == 42
    assert time.monotonic() - started < 1.0  # far below max_wait: nobody else was sending


def test_under_load_the_batcher_waits_for_more(closing):
    rec = Recorder(hold_first=True)
    b = DynamicBatcher(rec, max_batch=8, max_wait_ms=600)
    closing(b)
    b.submit_future(0)
    assert rec.started.wait(5)
    pair = [b.submit_future(1), b.submit_future(2)]
    rec.release.set()
    [f.result(5) for f in pair]  # a batch of 2: the batcher now counts as under load
    late = [b.submit_future(3)]
    time.sleep(0.1)  # well within max_wait of the first: joins the same batch
    late.append(b.submit_future(4))
    assert [f.result(5) for f in late] == [6, 8]
    assert rec.sizes == [1, 2, 2]


def test_an_exception_reaches_every_waiter_of_the_batch_and_the_batcher_goes_on(closing):
    calls = []

    def predict(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items:
            raise ValueError("unlucky input")
        return items

    gate, started = threading.Event(), threading.Event()

    def gated(items):
        started.set()
        gate.wait(5)
        return predict(items)

    b = DynamicBatcher(gated, max_batch=8, max_wait_ms=50)
    closing(b)
    blocker = b.submit_future(1)
    assert started.wait(5)
    doomed = [b.submit_future(x) for x in (12, 13, 14)]
    gate.set()
    assert blocker.result(5) == 1
    for f in doomed:
        with pytest.raises(ValueError, match="unlucky input"):
            f.result(5)
    assert calls[1] == [12, 13, 14]
    assert b.submit_future(7).result(5) == 7


def test_a_wrong_number_of_results_is_an_error_for_the_waiters(closing):
    b = DynamicBatcher(lambda items: items[:-1], max_batch=4, max_wait_ms=0)
    closing(b)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 inputs"):
        b.submit_future(1).result(5)


def test_async_submit_batches_concurrent_coroutines(closing):
    rec = Recorder(hold_first=True)
    b = DynamicBatcher(rec, max_batch=16, max_wait_ms=20)
    closing(b)

    async def main() -> list[int]:
        first = asyncio.ensure_future(b.submit(100))
        await asyncio.to_thread(rec.started.wait, 5)
        rest = [asyncio.ensure_future(b.submit(x)) for x in range(10)]
        await asyncio.sleep(0.05)
        rec.release.set()
        return [await first, *await asyncio.gather(*rest)]

    assert asyncio.run(main()) == [200, *[2 * x for x in range(10)]]
    assert rec.sizes == [1, 10]


def test_a_cancelled_request_is_not_run(closing):
    rec = Recorder(hold_first=True)
    b = DynamicBatcher(rec, max_batch=8, max_wait_ms=0)
    closing(b)
    b.submit_future(1)
    assert rec.started.wait(5)
    gone, kept = b.submit_future(2), b.submit_future(3)
    assert gone.cancel()
    rec.release.set()
    assert kept.result(5) == 6
    assert rec.sizes == [1, 1]


def test_close_serves_what_is_queued_then_refuses(closing):
    rec = Recorder(hold_first=True)
    b = DynamicBatcher(rec, max_batch=2, max_wait_ms=0)
    b.submit_future(1)
    assert rec.started.wait(5)
    queued = [b.submit_future(x) for x in (2, 3, 4)]
    threading.Timer(0.1, rec.release.set).start()
    b.close(timeout=5)
    assert [f.result(0) for f in queued] == [4, 6, 8]
    with pytest.raises(BatcherClosed):
        b.submit_future(5)


def test_a_failing_metrics_callback_does_not_fail_requests(closing):
    def broken(size: int) -> None:
        raise RuntimeError("metrics down")

    b = DynamicBatcher(lambda items: items, max_batch=2, max_wait_ms=0, on_batch=broken)
    closing(b)
    assert b.submit_future(5).result(5) == 5


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch": 0, "max_wait_ms": 1}, "max_batch must be at least 1"),
    ({"max_batch": 1, "max_wait_ms": -1}, "max_wait_ms must be >= 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynamicBatcher(lambda items: items, **kwargs)
