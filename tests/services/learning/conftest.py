"""Learning tests run torch on one CPU thread.

The CI and development boxes are small and shared: two OpenMP threads spin-waiting for a core
that another process holds make a 0.1 s training run take tens of seconds. The previous
thread count is restored after each test, so other packages' tests are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
