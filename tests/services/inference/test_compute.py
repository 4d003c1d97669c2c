"""The torch thread: every call runs on the one thread, results and errors come back to the caller,
and a call made from that thread runs at once (no deadlock)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from services.inference.compute import THREAD_NAME, TorchThread, torch_thread


def test_every_call_runs_on_the_one_thread_whoever_calls():
    shared = torch_thread()
    assert torch_thread() is shared  # one per process
    with ThreadPoolExecutor(4) as callers:
        seen = set(callers.map(lambda _: shared.call(lambda: threading.current_thread().name), range(16)))
    assert seen == {THREAD_NAME} and shared.call(threading.get_ident) == shared.ident


def test_results_and_errors_reach_the_caller_and_the_thread_lives_on():
    worker = TorchThread(name="strata-torch-test")
    assert worker.call(torch.add, torch.ones(2), 1).tolist() == [2.0, 2.0]

    def broken():
        raise ValueError("no such tensor")

    with pytest.raises(ValueError, match="no such tensor"):
        worker.call(broken)
    assert worker.call(lambda: 7) == 7


def test_a_call_from_the_thread_itself_runs_inline():
    worker = TorchThread(name="strata-torch-nested")
    assert worker.call(lambda: worker.call(threading.current_thread)).name == "strata-torch-nested"
